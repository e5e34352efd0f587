"""gptlab: build a GPT from its parts, train it with Lightning, configure it with Hydra."""

__version__ = "0.1.0"


def _register_config_schemas() -> None:
    """Register the typed config schemas and resolvers as soon as gptlab is imported.

    Compositions made anywhere (the CLI, ``hydra.compose`` in tests and notebooks)
    then find ``model/schema``; without Hydra installed there is nothing to register.
    """
    try:
        from gptlab.schema import register_schemas
        from gptlab.utils.resolvers import register_resolvers
    except ImportError:  # pragma: no cover
        return
    register_schemas()
    register_resolvers()


_register_config_schemas()
