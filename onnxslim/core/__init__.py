"""Pass contract, registry, manager, recipes and model checks."""
