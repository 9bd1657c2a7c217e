"""The README's own script ("Use the parser in your own script") runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_readme_embedding_script_runs(tmp_path):
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Use the parser in your own script", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 16
    script = tmp_path / "my_train.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script), "--my-flag", "3", "--bt.model.num_layers", "4",
                           "--bt.train.micro_batch_size=2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    flag, layers, micro = done.stdout.split()
    assert (flag, layers) == ("3", "4") and int(micro) > 1
