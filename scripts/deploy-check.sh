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

# What the compose stack and the image must do that `docker-compose config` does not check:
# each rule is a way the stack was broken before (PyYAML comes with docker-compose).
compose_invariants() {
  python3 - <<'EOF'
import re, sys, tomllib, yaml
c = yaml.safe_load(open("docker-compose.yml"))["services"]
problems = []
def need(ok, what):
    if not ok:
        problems.append(what)
def condition(service, on):
    deps = c[service].get("depends_on") or {}
    return deps.get(on, {}).get("condition") if isinstance(deps, dict) else None
adv = c["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
host = re.search(r"://localhost:(\d+)", adv)
need(host, "kafka advertises no localhost listener: a client on the host cannot connect")
if host:
    published = [str(p).split(":")[0] for p in c["kafka"].get("ports", [])]
    need(host.group(1) in published, f"kafka's host listener port {host.group(1)} is not published")
for name, svc in c.items():
    if name != "topics":
        need("healthcheck" in svc, f"{name} has no healthcheck")
need(condition("topics", "kafka") == "service_healthy", "topics does not wait for a healthy kafka")
need(condition("breakwater", "topics") == "service_completed_successfully",
     "breakwater does not wait for the topics to be created")
need(sum("build" in s for s in c.values()) == 1, "the image is built more than once")
processor = tomllib.load(open("deploy/breakwater.toml", "rb")).get("processor", {})
shutdown_ms = processor.get("shutdown_timeout_ms", 30000)
grace = str(c["breakwater"].get("stop_grace_period", "10s"))
m = re.fullmatch(r"(\d+)(s|m)", grace)
grace_ms = int(m.group(1)) * (60000 if m.group(2) == "m" else 1000) if m else 0
need(grace_ms > shutdown_ms,
     f"breakwater's stop_grace_period {grace} is not longer than its {shutdown_ms} ms shutdown")
need("alertmanager" in c, "no alertmanager service")
prom = yaml.safe_load(open("deploy/prometheus.yml"))
targets = [t for a in (prom.get("alerting") or {}).get("alertmanagers", [])
           for sc in a.get("static_configs", []) for t in sc.get("targets", [])]
need("alertmanager:9093" in targets, "prometheus sends its alerts nowhere (no alertmanager target)")
docker = open("Dockerfile").read()
need(re.search(r"^USER (?!root\b)\S+", docker, re.M), "the image runs as root")
need(re.search(r"^HEALTHCHECK ", docker, re.M), "the image has no HEALTHCHECK")
for p in problems:
    print(f"   {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
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
check "compose stack and image: host listener, healthchecks, start order, one build, stop grace, Alertmanager, non-root" compose_invariants
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
