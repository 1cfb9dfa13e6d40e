from typing import Literal

import pytest

from onnxslim.core.config import coerce
from onnxslim.core.pass_base import PassContext
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


@pytest.mark.parametrize("text, where, message", [
    # a quoted value is a string, whatever it reads as: "false" must not turn strict on
    ('[options]\nstrict = "false"\n', "[options] strict", "expected true or false, got 'false' (a string: write it without quotes)"),
    ('[options]\nstrict = "banana"\n', "[options] strict", "expected true or false, got 'banana'"),
    ('[options]\nsimplify = 1\n', "[options] simplify", "expected true or false, got 1"),
    ('[options]\nprune = "0.5"\n', "[options] prune", "expected a number, got '0.5'"),
    ('[options]\nprune = 0.3\nprune_method = "chanel"\n', "[options] prune_method", "expected one of 'channel', 'magnitude', 'nm'"),
    ('[options]\nprune = 0.3\nprune_skip = ["a", 3]\n', "[options] prune_skip", "expected a list of strings"),
    ('[options]\nreconstruct = "yes"\n', "[options] reconstruct", "expected true or false"),
    ('[options]\nquantize_bias_correction = "false"\n', "[options] quantize_bias_correction", "expected true or false"),
    ('[options]\nlowrank = true\n', "[options] lowrank", "expected a number or one of 'auto', got True"),
    ('[options]\ncalibration_data = 5\n', "[options] calibration_data", "expected a string, got 5"),
    ('[options]\ncalibration_samples = "8"\n', "[options] calibration_samples", "expected an integer, got '8'"),
    ('[options]\ninput_shapes = { input = "1,1,x,16" }\n', "[options] input_shapes.input", "expected a list of integers"),
    ('[options]\ninput_shapes = { input = [1, 1, 0, 16] }\n', "[options] input_shapes.input", "expected positive dims"),
    ('[options]\ninput_shapes = "input:1,1,16,16"\n', "[options] input_shapes", "expected a table such as { input = [1, 3, 224, 224] }"),
    ('[options]\nvalidation = { atol = "1e-3" }\n', "[options] validation.atol", "expected a number"),
    ('[options]\nvalidation = { bogus = 1 }\n', "[options] validation", "unknown setting(s) bogus"),
    ('[[pass]]\nname = "prune-channels"\namount = "0.3"\n', "pass prune-channels.amount", "expected a number, got '0.3'"),
    ('[[pass]]\nname = "fold-constants"\nlift_constants = "no"\n', "pass fold-constants.lift_constants", "expected true or false, got 'no'"),
    ('[[pass]]\nname = "fold-constants"\noutput_size_limit = "1000"\n', "pass fold-constants.output_size_limit", "expected an integer, got '1000'"),
    ('[[pass]]\nname = "fold-constants"\noutput_size_limit = 10.0\n', "pass fold-constants.output_size_limit", "expected an integer"),
    ('[[pass]]\nname = "quantize-static"\nexclude = 5\n', "pass quantize-static.exclude", "expected a list of strings"),
    ('[[pass]]\nname = "quantize-static"\nmethod = 1\n', "pass quantize-static.method", "expected one of 'minmax'"),
    ('[[pass]]\nname = "quantize-weights"\nbits = "4"\n', "pass quantize-weights.bits", "expected one of 4, 8, got '4'"),
    ('[[pass]]\nname = "split-lowrank"\nenergy = "0.9"\n', "pass split-lowrank.energy", "expected a number, got '0.9'"),
])
def test_wrongly_typed_values_name_the_file_key_and_type(tmp_path, text, where, message):
    path = tmp_path / "typed.toml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert info.value.one_line().startswith(f"{path}: {where}: ")
    assert message in info.value.one_line()


def test_well_typed_values_are_accepted(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text('[options]\nstrict = false\nprune = 1\nprune_skip = "a,b"\nlowrank = "auto"\n'
                    'input_shapes = { input = "1,1,16,16", other = [2, 3] }\nvalidation = { atol = 1, input_shapes = { x = "1,2" } }\n'
                    '[[pass]]\nname = "prune-channels"\namount = 0\nskip = ["/fc/Gemm"]\noverrides = "a=0.5,b=0.1"\n')
    recipe = load_recipe(path)
    assert recipe.options["strict"] is False and recipe.options["prune"] == 1
    assert recipe.options["input_shapes"] == {"input": (1, 1, 16, 16), "other": (2, 3)}  # the CLI's dims syntax, or a list
    assert recipe.options["validation"] == {"atol": 1.0, "input_shapes": {"x": (1, 2)}}
    (prune,) = build_passes(recipe.steps)
    assert prune.config.amount == 0.0 and prune.config.skip == ("/fc/Gemm",) and prune.config.overrides == ("a=0.5", "b=0.1")


@pytest.mark.parametrize("text", [
    '[[pass]]\nname = "quantize-static"\nmethod = "minmax"\n',
    '[[pass]]\nname = "prune-channels"\namount = 0.3\nreconstruct = true\n',
    '[[pass]]\nname = "split-lowrank"\nmin_cosine = 0.99\n',
])
def test_data_aware_passes_load_and_need_their_data_when_built(tmp_path, text):
    path = tmp_path / "data.toml"
    path.write_text(text)
    recipe = load_recipe(path)  # the data may come from the CLI or the API: not known here
    with pytest.raises(ConfigError) as info:
        build_passes(recipe.steps)  # built without calibration data: one error naming the recipe and the pass
    assert info.value.one_line().startswith(f"{path}: pass {recipe.steps[0].name}: ")
    assert "calibration data" in info.value.one_line()
    (built,) = build_passes(recipe.steps, PassContext(calibration=[]))
    assert built.name == recipe.steps[0].name and built.context.calibration == []


def test_comma_separated_text_is_a_list_and_its_items_are_parsed():
    assert coerce("1,3,224,224", tuple[int, ...], where="x") == (1, 3, 224, 224)
    assert coerce(["Softmax", "head"], tuple[str, ...], where="x") == ("Softmax", "head")
    assert coerce("4", Literal[4, 8], where="x", text=True) == 4
    with pytest.raises(ConfigError, match="expected a list of integers"):
        coerce("1,a", tuple[int, ...], where="x")
    with pytest.raises(ConfigError, match="expected true or false, got 'true'"):
        coerce("true", bool, where="x")


def test_comma_separated_names_are_stripped():
    # "--quantize-exclude 'Conv, Gemm'" excluded only Conv, and warned that ' Gemm' matched nothing
    from onnxslim.core.config import coerce

    assert coerce("Conv, Gemm ,  /head/MatMul", tuple[str, ...], where="exclude") == ("Conv", "Gemm", "/head/MatMul")
