import pytest

from onnxslim.core.recipe import Step, build_passes, load_recipe, parse_recipe, plan_steps
from onnxslim.errors import ConfigError, RecipeError, UnknownPassError
from onnxslim.passes import SIMPLIFY_PIPELINE
from onnxslim.passes.cleanup.fold_constants import FoldConstants


def test_recipe_builds_typed_configs(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[options]\nstrict = true\n\n[[pass]]\nname = "fold-constants"\noutput_size_limit = 1000\n\n[[pass]]\nname = "remove-unused"\n')
    recipe = load_recipe(path)
    assert recipe.options == {"strict": True}
    passes = build_passes(recipe.steps)
    assert isinstance(passes[0], FoldConstants) and passes[0].config.output_size_limit == 1000
    assert [p.name for p in passes] == ["fold-constants", "remove-unused"]


def test_simplify_is_added_in_front_unless_turned_off():
    steps = [Step("remove-unused")]
    assert [s.name for s in plan_steps(steps, simplify=True)] == [*SIMPLIFY_PIPELINE, "remove-unused"]
    assert [s.name for s in plan_steps(steps, simplify=False)] == ["remove-unused"]
    placed = [Step("remove-unused"), Step("simplify")]
    assert [s.name for s in plan_steps(placed, simplify=True)] == ["remove-unused", *SIMPLIFY_PIPELINE]


@pytest.mark.parametrize("text, error, message", [
    ('[[pass]]\nname = "no-such-pass"\n', UnknownPassError, "unknown pass 'no-such-pass'"),
    ('[[pass]]\nname = "fold-constants"\nbogus = 1\n', RecipeError, "unknown setting(s) bogus"),
    ('[[pass]]\nname = "fold-constants"\noutput_size_limit = "many"\n', RecipeError, "expected an integer"),
    ('[[pass]]\nname = "fold-constants"\noutput_size_limit = -5\n', RecipeError, "must be >= 0"),
    ('[[pass]]\noutput_size_limit = 5\n', RecipeError, "needs a name"),
    ('[passes]\nname = "x"\n', RecipeError, "unknown table(s) passes"),
    ('[[pass]\nname = ', RecipeError, "not valid TOML"),
])
def test_bad_recipes_name_the_file_and_problem(tmp_path, text, error, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(error) as info:
        load_recipe(path)
    assert message in info.value.one_line()
    assert str(path) in info.value.one_line()


def test_missing_recipe():
    with pytest.raises(RecipeError, match="not found"):
        load_recipe("/nonexistent/recipe.toml")


def test_bool_setting_rejects_numbers():
    with pytest.raises(ConfigError, match="true or false"):
        FoldConstants.from_options({"lift_constants": 3})


def test_parse_recipe_without_passes():
    assert parse_recipe({}).steps == []
