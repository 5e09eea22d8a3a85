"""Generated pages of the documentation site (run by ``hooks.py`` while mkdocs builds; never committed output).

Each module renders one kind of reference page from the code: the spec reference of every task from its pydantic
spec (:mod:`.spec_reference`), the model zoo from the registries (:mod:`.zoo`), the CLI reference from the typer app
(:mod:`.cli_reference`), the TAO key-mapping tables (:mod:`.tao_reference`) and the Python API page for
mkdocstrings (:mod:`.api_reference`). :mod:`.runnable` extracts the guides' runnable commands for the tests.
"""
