"""`dvc plots show` with the repository's HTML template (.dvc/config: plots.html_template,
vendor/vega/plots.html) writes a page that needs no network: no script is loaded from
anywhere, vega, vega-lite and vega-embed are inlined at the versions DVC's renderer names,
and (where node is installed) each chart on the page compiles and renders to SVG with
exactly the inlined libraries, with no network and no browser."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO, sh

VERSIONS = {"vega": "5.20.2", "vega-lite": "5.2.0", "vega-embed": "6.18.2"}
RENDER = r"""
const fs = require("fs"), vm = require("vm");
const [page, specs] = process.argv.slice(2).map(f => fs.readFileSync(f, "utf8"));
const context = vm.createContext({console, setTimeout, clearTimeout, Promise});
for (const [, code] of page.matchAll(/<script>([\s\S]*?)<\/script>/g))
  vm.runInContext(code, context);  // each inlined library sets its global (UMD)
(async () => {
  for (const spec of JSON.parse(specs)) {
    const compiled = context.vegaLite.compile(spec).spec;
    const view = new context.vega.View(context.vega.parse(compiled), {renderer: "none"});
    const svg = await view.toSVG();
    console.log(JSON.stringify({paths: (svg.match(/<path/g) || []).length,
                                vega: context.vega.version, lite: context.vegaLite.version,
                                embed: typeof context.vegaEmbed}));
  }
})().catch(e => { console.error(e); process.exit(1); });
"""


@pytest.fixture
def plotted(tmp_path) -> tuple[Path, str]:
    """A DVC repository with this repository's .dvc/config, its template and one
    two-series plot; the page `dvc plots show` writes with no network reachable."""
    repo = tmp_path / "repo"
    repo.mkdir()
    sh(repo, "git", "init", "-q")
    sh(repo, "dvc", "init", "-q")
    shutil.copy(REPO / ".dvc/config", repo / ".dvc/config")
    shutil.copytree(REPO / "vendor/vega", repo / "vendor/vega")
    (repo / "curve.csv").write_text("step,baseline,polychromic\n1,2.0,2.1\n2,1.5,1.7\n3,1.2,1.5\n")
    (repo / "dvc.yaml").write_text("plots:\n  - curve.csv:\n      x: step\n"
                                   "      y: [baseline, polychromic]\n")
    dead = "http://127.0.0.1:9"  # nothing listens: any fetch fails
    env = {**os.environ, "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "NO_PROXY": ""}
    subprocess.run(["dvc", "plots", "show", "-o", "out"], cwd=repo, env=env, check=True,
                   capture_output=True, timeout=300)
    return repo, (repo / "out/index.html").read_text(encoding="utf8")


def test_the_page_loads_nothing_and_inlines_the_pinned_libraries(plotted):
    _, page = plotted
    assert not re.search(r"<script[^>]*\bsrc\s*=", page)
    assert "cdn.jsdelivr" not in page
    for name, version in VERSIONS.items():
        assert f"<!-- {name} {version} " in page, name
    assert page.count("vegaEmbed('#") == 1  # the one chart, drawn by the inlined vega-embed


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_each_chart_renders_with_the_inlined_libraries_alone(plotted, tmp_path):
    repo, page = plotted
    specs = [json.loads(m) for m in re.findall(r"var spec = (\{.*?\});\n", page)]
    assert len(specs) == 1 and specs[0]["$schema"].endswith("vega-lite/v5.json")
    files = {"render.js": RENDER, "page.html": page, "specs.json": json.dumps(specs)}
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf8")
    result = subprocess.run(["node", "render.js", "page.html", "specs.json"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    (chart,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert chart["vega"] == VERSIONS["vega"] and chart["lite"] == VERSIONS["vega-lite"]
    assert chart["embed"] == "function"
    assert chart["paths"] >= 2  # a line per series
