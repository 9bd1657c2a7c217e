"""The bridge-train command line, one concern per module.

    parser.py         the argparse front end: global options, one group per section and one
                      argument per field, order-keeping actions, dotlist overrides; the
                      embedding API (add_config_arguments / apply_arguments)
    schema.py         the flag schema (flags, types, choices, docs, recipe values) as JSON data
    cache.py          schemas cached on disk, so help/completion/flag errors skip torch
    completion.py     shell completion (argcomplete), answered from the cached schema
    flags.py          the flag table generated from the live dataclasses (+ the snapshot listing)
    layering.py       recipe < --config-file... < flags, explicit paths, section switching
    recipe_loader.py  --recipe NAME | FILE.py[:FUNCTION] | FILE.yaml
    help.py, docs.py  --help by section, field docstrings read from source
    dry_run.py        --dry-run summary; memory.py: the per-GPU memory estimate
    main.py           main(): dispatch, exit codes, rank-0 printing

The value rules (text/YAML -> typed value -> YAML) live in megatron_bridge_cli.values, shared
with the YAML codec.

Use the flags in a script of your own::

    parser = argparse.ArgumentParser()
    parser.add_argument("--my-flag")
    add_config_arguments(parser, cfg, prefix="")   # --model.num_layers, --peft=lora, ...
    args = parser.parse_args()
    apply_arguments(cfg, args)                     # same rules as bridge-train
"""

from megatron_bridge_cli.cli.parser import add_config_arguments, apply_arguments

__all__ = ["add_config_arguments", "apply_arguments"]
