#!/usr/bin/env bash
# Rebuild vendor/vega/plots.html, the HTML template `dvc plots show` and `dvc plots diff` fill
# (.dvc/config: plots.html_template), with vega, vega-lite and vega-embed inlined: the pages
# then draw with no network (DVC's own template loads them from a CDN). Pinned to the
# versions DVC's renderer names (dvc_render/vega.py); needs npm (the npm registry).
set -euo pipefail
VEGA=5.20.2 VEGA_LITE=5.2.0 VEGA_EMBED=6.18.2
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/vendor/vega"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "vega@$VEGA" "vega-lite@$VEGA_LITE" "vega-embed@$VEGA_EMBED" >/dev/null
for package in "vega@$VEGA" "vega-lite@$VEGA_LITE" "vega-embed@$VEGA_EMBED"; do
  name="${package%@*}"
  mkdir "$name" && tar xzf "$name-${package#*@}.tgz" -C "$name"
  cp "$name/package/LICENSE" "$out/LICENSE-$name"
done
python - "$out/plots.html" "$VEGA" "$VEGA_LITE" "$VEGA_EMBED" <<'PY'
import sys
from pathlib import Path

out, versions = Path(sys.argv[1]), dict(zip(("vega", "vega-lite", "vega-embed"), sys.argv[2:]))
scripts = []
for name, version in versions.items():
    code = Path(f"{name}/package/build/{name}.min.js").read_text(encoding="utf8")
    for placeholder in ("{plot_divs}", "{scripts}", "{refresh_tag}", "</script"):
        assert placeholder not in code, (name, placeholder)
    scripts.append(f"<!-- {name} {version} (BSD-3-Clause: vendor/vega/LICENSE-{name}) -->\n"
                   f"<script>{code}</script>")
# DVC replaces {refresh_tag} and {plot_divs}; there is no {scripts}, so its CDN tags stay out.
page = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{refresh_tag}
<title>DVC plots (polychromic LoRA)</title>
%s
<style>
  body { font-family: sans-serif; }
  table { border-spacing: 15px; }
</style>
</head>
<body>
{plot_divs}
</body>
</html>
""" % "\n".join(scripts)
out.write_text(page, encoding="utf8")
print(f"{out}: {out.stat().st_size} bytes ({', '.join(f'{k} {v}' for k, v in versions.items())})")
PY
