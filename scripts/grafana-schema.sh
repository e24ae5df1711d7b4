#!/usr/bin/env bash
# Grafana's own dashboard JSON schema, generated offline from @grafana/schema's TypeScript types into
# .cache/grafana-schema/dashboard.schema.json (idempotent). Used by tests/monitoring.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=.cache/grafana-schema
OUT=$DIR/dashboard.schema.json
if [[ -s "$OUT" ]]; then exit 0; fi
if ! command -v npm >/dev/null 2>&1; then echo "grafana-schema.sh: npm is not installed" >&2; exit 1; fi
mkdir -p "$DIR"
cd "$DIR"
[[ -f package.json ]] || echo '{"private": true}' > package.json
npm install --silent --no-audit --no-fund @grafana/schema@13.2.3 ts-json-schema-generator@2.9.0 typescript@5.9.3 >/dev/null
npx --no-install ts-json-schema-generator \
  --path node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts \
  --type Dashboard --no-type-check -o dashboard.schema.json
echo "grafana dashboard schema: $DIR/dashboard.schema.json"
