#!/usr/bin/env bash
# Validates the deploy side without a Docker engine: the compose file, the Prometheus config,
# the alert rules and their unit tests, the Alertmanager config, the Grafana dashboard's JSON
# and the alerts' runbook links. Runs every check, then exits non-zero if any failed.
#
# Needs (Debian packages): docker-compose (or the `docker compose` plugin), prometheus
# (promtool), prometheus-alertmanager (amtool), python3.
set -euo pipefail
cd "$(dirname "$0")/.."

failed=()

# check LABEL COMMAND...: runs COMMAND, prints LABEL and whether it passed.
check() {
  local label=$1
  shift
  echo "== $label"
  if "$@"; then
    echo "   ok"
  else
    echo "   FAILED: $label" >&2
    failed+=("$label")
  fi
}

# `docker-compose config` parses and validates the file; it needs no Docker engine.
compose_config() {
  if command -v docker-compose >/dev/null 2>&1; then
    docker-compose -f docker-compose.yml config -q
  elif docker compose version >/dev/null 2>&1; then
    docker compose -f docker-compose.yml config -q
  else
    echo "   neither docker-compose nor the docker compose plugin is installed" >&2
    return 1
  fi
}

# Every alert's runbook_url points at a section of deploy/RUNBOOK.md.
runbook_links() {
  python3 - <<'EOF'
import re, sys
rules = open("deploy/alerts.yml").read()
alerts = re.findall(r"^\s*- alert: (\S+)", rules, re.M)
urls = re.findall(r'runbook_url: "deploy/RUNBOOK\.md#([^"]+)"', rules)
anchors = {h.strip().lower() for h in re.findall(r"^## (.+)$", open("deploy/RUNBOOK.md").read(), re.M)}
bad = [a for a in alerts if a.lower() not in urls] + [u for u in urls if u not in anchors]
if len(urls) != len(alerts) or bad:
    print(f"   {len(alerts)} alerts, {len(urls)} runbook_urls; missing or dangling: {bad}", file=sys.stderr)
    sys.exit(1)
EOF
}

# need TOOL PACKAGE: fails, naming the Debian package, if TOOL is not installed.
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "   $1 not found (Debian package: $2)" >&2
  return 1
}

promtool_config() { need promtool prometheus && promtool check config deploy/prometheus.yml; }
promtool_rules() { need promtool prometheus && promtool check rules deploy/alerts.yml; }
promtool_tests() { need promtool prometheus && promtool test rules deploy/alerts.test.yml; }
amtool_config() { need amtool prometheus-alertmanager && amtool check-config deploy/alertmanager.yml; }
dashboard_json() { python3 -m json.tool deploy/grafana/breakwater-dashboard.json >/dev/null; }

check "compose file is valid (docker-compose config)" compose_config
check "Prometheus config and the rule files it names are valid (promtool check config)" promtool_config
check "alert rules are valid (promtool check rules)" promtool_rules
check "alert rules' unit tests pass (promtool test rules)" promtool_tests
check "Alertmanager config is valid (amtool check-config)" amtool_config
check "Grafana dashboard is valid JSON (python3 -m json.tool)" dashboard_json
check "every alert's runbook_url has a section in deploy/RUNBOOK.md" runbook_links

if ((${#failed[@]})); then
  echo "deploy-check: ${#failed[@]} check(s) failed:" >&2
  printf '  - %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "deploy-check: all checks passed"
