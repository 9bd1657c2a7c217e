"""The bridge-train command line, one concern per module.

    argv.py           split argv into options in order (no argparse: see its docstring)
    flags.py          the flag table generated from the dataclasses (+ the snapshot listing)
    coerce.py         value syntax: text and YAML values -> typed field values
    typeinfo.py       type-hint shapes, --help type labels, "expected ..." phrases
    layering.py       recipe < --config-file... < flags, explicit paths, section switching
    recipe_loader.py  --recipe NAME | FILE.py[:FUNCTION] | FILE.yaml, --list-recipes
    help.py, docs.py  --help by section, field docstrings read from source
    dry_run.py        --dry-run summary; memory.py: the per-GPU memory estimate
    main.py           main(): dispatch, exit codes, rank-0 printing
"""
