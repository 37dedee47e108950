#!/usr/bin/env bash
# `make demo`: pilot-discovery, reviews v1 and v2 each behind its own
# pilot-agent + Envoy, a productpage sidecar sending traffic, and a
# VirtualService rewritten stage by stage while the terminal counts where
# requests land; then mixer-policy enforcing a deny rule and a rate limit
# through the same Envoys; all along, mixer-telemetry counting every request
# into Istio's metrics and statsd-bridge collecting Envoy's own stats; and
# Citadel keeping a certificate Secret for each ServiceAccount and, through
# each sidecar's node agent, the certificates of mutual TLS and authorization
# at the end; last, sidecar injection: meshctl kube-inject of a Deployment
# and the injector's webhook answering an AdmissionReview over HTTPS with
# the certificate Citadel issued it; and Galley: meshctl validate, then the
# demo's config served over MCP and a broken VirtualService refused by the
# validating webhook over HTTPS. Everything runs on 127.77.0.0/16 and is stopped on exit.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="${CARGO_TARGET_DIR:-$root/target}/debug"
envoy="${TRIREME_ENVOY:-$("$root/scripts/envoy.sh")}"
work=$(mktemp -d -t trireme-demo-XXXX)
mkdir -p "$work/config"
cp "$root/samples/demo/cluster.yaml" "$work/config/"
cp "$root/samples/demo/dr-reviews.yaml" "$work/config/dr.yaml"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "logs kept in $work"
}
trap cleanup EXIT

wait_http() { # url what
  for _ in $(seq 200); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "timed out waiting for $2 ($1)" >&2; exit 1
}

echo "== starting mixer-policy on 127.77.0.10 (logs: $work)"
"$bin/mixer-policy" server --configStoreURL "fs://$work/config" --address tcp://127.77.0.10:9091 \
  --monitoringPort 15014 >"$work/mixer-policy.log" 2>&1 &
pids+=($!)
wait_http http://127.77.0.10:15014/ready mixer-policy

echo "== starting mixer-telemetry on 127.77.0.20 and statsd-bridge on 127.77.0.30"
"$bin/mixer-telemetry" server --configStoreURL "fs://$work/config" --address tcp://127.77.0.20:9091 \
  --monitoringPort 15014 >"$work/mixer-telemetry.log" 2>&1 &
pids+=($!)
"$bin/statsd-bridge" --statsd.listen-udp=127.77.0.30:9125 --statsd.listen-tcp=127.77.0.30:9125 \
  --web.listen-address=127.77.0.30:9102 --statsd.mapping-config="$root/samples/demo/statsd-mapping.yaml" \
  >"$work/statsd-bridge.log" 2>&1 &
pids+=($!)
wait_http http://127.77.0.20:15014/ready mixer-telemetry
wait_http http://127.77.0.30:9102/-/ready statsd-bridge

echo "== starting citadel on 127.77.0.40: a self-signed root and an istio.<sa> Secret per ServiceAccount"
"$bin/citadel" token issuer --key "$work/token-issuer.pem" --jwks "$work/jwks.json"
"$bin/citadel" --self-signed-ca --key-algorithm ecdsa --configDir "$work/config" --secrets-dir "$work/secrets" \
  --token-jwks "$work/jwks.json" --ledger-url "sqlite://$work/citadel-ledger.db" --bind-address 127.77.0.40 \
  >"$work/citadel.log" 2>&1 &
pids+=($!)
wait_http http://127.77.0.40:15014/ready citadel

echo "== starting pilot-discovery on 127.77.0.1 (logs: $work)"
"$bin/pilot-discovery" discovery --registries File --configDir "$work/config" \
  --meshConfig "$root/samples/demo/mesh.yaml" --grpcAddr 127.77.0.1:15010 \
  --httpAddr 127.77.0.1:8080 --monitoringAddr 127.77.0.1:15014 >"$work/pilot.log" 2>&1 &
pids+=($!)
wait_http http://127.77.0.1:8080/ready pilot-discovery

for v in 1 2; do
  "$bin/echo" --listen "127.77.2.$((v + 1)):9080" --service reviews --version "v$v" --pod "reviews-v$v" \
    >"$work/reviews-v$v-app.log" 2>&1 &
  pids+=($!)
done
for pod in "productpage 127.77.1.1 bookinfo-productpage" "reviews-v1 127.77.1.2 bookinfo-reviews" "reviews-v2 127.77.1.3 bookinfo-reviews"; do
  set -- $pod
  echo "== starting $1's sidecar (pilot-agent + Envoy, node agent for $3) on $2"
  mkdir -p "$work/$1"
  "$bin/citadel" token mint --key "$work/token-issuer.pem" --namespace default --service-account "$3" >"$work/$1/istio-token"
  POD_NAME=$1 POD_NAMESPACE=default INSTANCE_IP=$2 ISTIO_META_INTERCEPTION_MODE=NONE \
    "$bin/pilot-agent" proxy sidecar --discoveryAddress 127.77.0.1:15010 --binaryPath "$envoy" \
    --configPath "$work/$1" --concurrency 1 --terminationDrainDuration 1s \
    --statsdUdpAddress 127.77.0.30:9125 \
    --sdsUdsPath "unix:$work/$1/sds/uds_path" --caAddr 127.77.0.40:8060 \
    --caRootCert "$work/secrets/istio-system/istio-ca-secret/root-cert.pem" \
    --tokenPath "$work/$1/istio-token" --serviceAccount "$3" --keyAlgorithm ecdsa >"$work/$1-agent.log" 2>&1 &
  pids+=($!)
done
for ip in 1 2 3; do wait_http "http://127.77.1.$ip:15020/healthz/ready" "sidecar 127.77.1.$ip"; done

# The productpage proxy's RDS version once Envoy has ACKed it (empty while a push is unacknowledged).
acked_rds() {
  local rds acked sent
  rds=$(curl -fsS 'http://127.77.0.1:8080/debug/syncz?proxyID=sidecar~127.77.1.1~productpage.default~default.svc.cluster.local' |
    grep -o '"rds":{[^}]*}' || true)
  acked=$(sed -n 's/.*"acked_version":"\([^"]*\)".*/\1/p' <<<"$rds")
  sent=$(sed -n 's/.*"sent_version":"\([^"]*\)".*/\1/p' <<<"$rds")
  [ "$acked" = "$sent" ] && echo "$acked" || true
}

bar() { local s="" i; for ((i = 0; i < $1 / 4; i++)); do s+="#"; done; echo "$s"; }

traffic() { # title [header]
  local v1=0 v2=0 denied=0 limited=0 other=0 answer
  for _ in $(seq 100); do
    answer=$(curl -s -w ' %{http_code}' -x http://127.77.1.1:15080 ${2:+-H "$2"} http://reviews.default.svc.cluster.local:9080/ || true)
    case "$answer" in
      *'"version":"v1"'*) v1=$((v1 + 1)) ;;
      *'"version":"v2"'*) v2=$((v2 + 1)) ;;
      *' 403') denied=$((denied + 1)) ;;
      *' 429') limited=$((limited + 1)) ;;
      *) other=$((other + 1)) ;;
    esac
  done
  printf '   %-40s v1 %3d %-25s v2 %3d %s\n' "$1" "$v1" "$(bar "$v1")" "$v2" "$(bar "$v2")"
  [ "$denied" -eq 0 ] || echo "   $denied refused by policy (403)"
  [ "$limited" -eq 0 ] || echo "   $limited over quota (429)"
  [ "$other" -eq 0 ] || echo "   ($other requests failed)"
}

# Waits until a request with `header` gets `code`: the rule has reached
# Pilot (the filter on reviews' sidecars) and mixer-policy alike.
until_status() { # code header title
  local started
  started=$(date +%s%N)
  for _ in $(seq 400); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' -x http://127.77.1.1:15080 -H "$2" http://reviews.default.svc.cluster.local:9080/)" = "$1" ]; then
      echo "== $3 (enforced after $(( ($(date +%s%N) - started) / 1000000 )) ms)"
      return 0
    fi
    sleep 0.025
  done
  echo "== $3: not enforced after 10 s" >&2
}

apply() { # file title
  local before started now
  before=$(acked_rds)
  started=$(date +%s%N)
  cp "$1" "$work/config/vs.yaml"
  for _ in $(seq 200); do
    now=$(acked_rds)
    if [ -n "$now" ] && [ "$now" != "$before" ]; then break; fi
    sleep 0.005
  done
  echo "== $2 (applied; Envoy ACKed in $(( ($(date +%s%N) - started) / 1000000 )) ms)"
}

echo
echo "== no VirtualService: Envoy balances across both versions"
traffic "100 requests from productpage"
for stage in all-v1 split-80-20 split-50-50 all-v2 jason-v1; do
  file="$root/samples/demo/vs-$stage.yaml"
  apply "$file" "$(sed -n 's/^# //p' "$file" | head -n 1)"
  traffic "100 requests from productpage"
  if [ "$stage" = jason-v1 ]; then traffic "100 requests with end-user: jason" "end-user: jason"; fi
done
echo
echo "== Mixer policy, enforced by the same unmodified Envoys through ext_authz"
cp "$root/samples/demo/policy-deny-jason.yaml" "$work/config/policy.yaml"
until_status 403 "end-user: jason" "$(sed -n 's/^# //p' "$root/samples/demo/policy-deny-jason.yaml" | head -n 1)"
traffic "100 requests with end-user: jason" "end-user: jason"
traffic "100 requests from anyone else" "end-user: ann"
rm "$work/config/policy.yaml"
cp "$root/samples/demo/policy-rate-limit.yaml" "$work/config/quota.yaml"
echo "== $(sed -n 's/^# //p' "$root/samples/demo/policy-rate-limit.yaml" | head -n 1)"
for _ in $(seq 400); do
  grep -q '"rules":\["quota' <(curl -fsS http://127.77.0.10:15014/debug/configz) && break
  sleep 0.025
done
traffic "100 requests from productpage"
echo
echo "== Mixer telemetry: every request above, reported by both sidecars (istio_requests_total at 42422)"
# Envoy flushes access logs every second: wait for the last rate-limited ones.
for _ in $(seq 100); do
  curl -fsS http://127.77.0.20:42422/metrics 2>/dev/null | grep -q 'response_code="429"' && break
  sleep 0.1
done
curl -fsS http://127.77.0.20:42422/metrics | grep '^istio_requests_total' |
  sed -E 's/.*reporter="([^"]*)".*source_workload="([^"]*)".*destination_workload="([^"]*)".*response_code="([^"]*)".*\} (.*)/  reporter=\1 \2 -> \3 \4: \5/' | sort
echo "== statsd-bridge: Envoy's own request counts, as statsd over UDP (9102)"
for _ in $(seq 100); do # Envoy flushes its stats every 5 s
  curl -fsS http://127.77.0.30:9102/metrics 2>/dev/null | grep -q '^envoy_cluster_upstream_rq_total.*reviews' && break
  sleep 0.1
done
curl -fsS http://127.77.0.30:9102/metrics | grep '^envoy_cluster_upstream_rq_total' | grep reviews | sed 's/^/  /'
echo "== Citadel: the Secrets it keeps (in $work/secrets, laid out as the kubelet mounts them)"
for s in "$work"/secrets/default/istio.*; do
  if command -v openssl >/dev/null; then
    printf '  %s: %s, %s\n' "$(basename "$s")" \
      "$(openssl x509 -in "$s/cert-chain.pem" -noout -ext subjectAltName | tail -1 | tr -d ' ')" \
      "$(openssl verify -CAfile "$s/root-cert.pem" "$s/cert-chain.pem" | sed 's/.*: //')"
  else
    echo "  $(basename "$s"): $(ls "$s" | tr '\n' ' ')"
  fi
done
echo
echo "== $(sed -n 's/^# //p' "$root/samples/demo/mtls-strict.yaml" | head -n 1)"
rm -f "$work/config/quota.yaml"
cp "$root/samples/demo/mtls-strict.yaml" "$work/config/dr.yaml"
plain() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 http://127.77.1.2:9080/ || true; }
for _ in $(seq 400); do [ "$(plain)" = 000 ] && break; sleep 0.025; done
traffic "100 requests from productpage"
echo "   plaintext straight to reviews-v1's sidecar: $([ "$(plain)" = 000 ] && echo refused || echo "answered $(plain)")"
echo "   reviews sees its caller as: $(curl -s -x http://127.77.1.1:15080 http://reviews.default.svc.cluster.local:9080/ |
  grep -o 'URI=spiffe://[^";]*' | head -1)"
echo "   reviews-v1's Envoy holds certificate serial $(curl -s http://127.77.1.2:15000/certs |
  grep -o '"serial_number": *"[^"]*"' | sed -n 2p | sed 's/.*: *//' | tr -d '"')"
echo "== AuthorizationPolicy: $(sed -n 's/^# //p' "$root/samples/demo/authz-productpage-only.yaml" | head -n 1)"
cp "$root/samples/demo/authz-productpage-only.yaml" "$work/config/authz.yaml"
for _ in $(seq 400); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -x http://127.77.1.3:15080 http://reviews.default.svc.cluster.local:9080/)" = 403 ] && break
  sleep 0.025
done
traffic "100 requests from productpage"
denied=0
for _ in $(seq 20); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -x http://127.77.1.3:15080 http://reviews.default.svc.cluster.local:9080/)" = 403 ] && denied=$((denied + 1))
done
echo "   20 requests from reviews-v2 (bookinfo-reviews): $denied refused by RBAC (403)"
echo "== sidecar injection: meshctl kube-inject of samples/demo/ratings-deployment.yaml"
"$bin/meshctl" kube-inject -f "$root/samples/demo/ratings-deployment.yaml" -o "$work/ratings-injected.yaml"
echo "   added: $(grep -c 'name: istio-proxy' "$work/ratings-injected.yaml") istio-proxy, $(grep -c 'name: istio-init' "$work/ratings-injected.yaml") istio-init; readiness probe now $(grep -o '/app-health/[a-z]*/readyz' "$work/ratings-injected.yaml" | head -1); injected again, unchanged: $("$bin/meshctl" kube-inject -f "$work/ratings-injected.yaml" | cmp -s - "$work/ratings-injected.yaml" && echo yes || echo no)"
certs="$work/secrets/istio-system/istio.istio-sidecar-injector-service-account"
echo "== starting sidecar-injector on 127.77.0.50:9443 with the certificate Citadel keeps in $certs"
for _ in $(seq 200); do [ -f "$certs/key.pem" ] && break; sleep 0.05; done
"$bin/sidecar-injector" --address 127.77.0.50 --port 9443 --monitoringPort 15014 \
  --tlsCertFile "$certs/cert-chain.pem" --tlsKeyFile "$certs/key.pem" --caCertFile "$certs/root-cert.pem" \
  >"$work/sidecar-injector.log" 2>&1 &
pids+=($!)
wait_http http://127.77.0.50:15014/ready sidecar-injector
review='{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"demo-1","kind":{"group":"","version":"v1","kind":"Pod"},"namespace":"default","operation":"CREATE","object":{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"ratings-v1-6f9c7-","labels":{"app":"ratings","pod-template-hash":"6f9c7"}},"spec":{"containers":[{"name":"ratings","image":"ratings:1","readinessProbe":{"httpGet":{"path":"/health","port":9080}}}]}}}}'
answer=$(curl -sS --cacert "$certs/root-cert.pem" --resolve istio-sidecar-injector.istio-system.svc:9443:127.77.0.50 \
  -H 'content-type: application/json' -d "$review" https://istio-sidecar-injector.istio-system.svc:9443/inject)
patch=$(printf '%s' "$answer" | sed 's/.*"patch":"\([^"]*\)".*/\1/' | base64 -d)
echo "   AdmissionReview over HTTPS answered allowed=$(printf '%s' "$answer" | grep -o '"allowed":[a-z]*' | cut -d: -f2) with $(printf '%s' "$patch" | grep -o '"op":' | wc -l) JSON patch operations, adding: $(printf '%s' "$patch" | grep -o '"name":"istio-[a-z]*"' | sort -u | cut -d'"' -f4 | tr '\n' ' ')"
echo "== Galley: meshctl validate of the demo's config, then of samples/demo/vs-broken.yaml"
"$bin/meshctl" validate -f "$work"/config/*.yaml | sed 's/^/   /'
"$bin/meshctl" validate -f "$root/samples/demo/vs-broken.yaml" 2>&1 | sed 's/^/   /' || true
certs="$work/secrets/istio-system/istio.istio-galley-service-account"
echo "== starting galley on 127.77.0.60 over $work/config: MCP on 9901, the webhook on 9443 with Citadel's certificate"
for _ in $(seq 200); do [ -f "$certs/key.pem" ] && break; sleep 0.05; done
"$bin/galley" server --configPath "$work/config" --server-address tcp://127.77.0.60:9901 --insecure \
  --validation-port 9443 --monitoringPort 15014 \
  --tlsCertFile "$certs/cert-chain.pem" --tlsKeyFile "$certs/key.pem" --caCertFile "$certs/root-cert.pem" \
  >"$work/galley.log" 2>&1 &
pids+=($!)
wait_http http://127.77.0.60:15014/ready galley
echo "   serving $(curl -s http://127.77.0.60:15014/metrics | awk '$1 == "galley_runtime_resources" {print $2}') valid resources over MCP (Pilot reads them with mesh configSources, the Mixers with --configStoreURL mcp://127.77.0.60:9901)"
review='{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"demo-2","operation":"CREATE","namespace":"default","object":{"apiVersion":"networking.istio.io/v1alpha3","kind":"VirtualService","metadata":{"name":"reviews","namespace":"default"},"spec":{"hosts":["reviews"],"http":[{"match":[{"uri":{"regex":"/api/(v1"}}],"route":[{"destination":{"host":"reviews","subset":"v1"},"weight":80}]}]}}}}'
answer=$(curl -sS --cacert "$certs/root-cert.pem" --resolve istio-galley.istio-system.svc:9443:127.77.0.60 \
  -H 'content-type: application/json' -d "$review" https://istio-galley.istio-system.svc:9443/admitpilot)
echo "   kubectl apply of vs-broken.yaml, as the API server asks the webhook: allowed=$(printf '%s' "$answer" | grep -o '"allowed":[a-z]*' | cut -d: -f2)"
printf '%s' "$answer" | grep -o '"message":"[^"]*\(\\"[^"]*\)*"' | cut -d: -f2- | sed 's/^/   /'
echo
echo "pilot debug: http://127.77.0.1:8080/debug/syncz, mixer-policy: http://127.77.0.10:15014/debug/configz, mesh metrics: http://127.77.0.20:42422/metrics (stopping in a moment)"
