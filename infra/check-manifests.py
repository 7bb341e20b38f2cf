#!/usr/bin/env python3
"""Checks of signet's infra/ files that the schema validators cannot make.

Run with the venv of scripts/check-infra.sh (PyYAML, promql-parser):

  check-manifests.py split RENDERED CORE_OUT CRDS_OUT
      Splits a rendered kustomize stream: KEDA and monitoring.coreos.com objects go to
      CRDS_OUT (for validate-crds.mjs), everything else to CORE_OUT (for
      kubernetes-validate). Each ScaledJob's jobTargetRef is also written to CORE_OUT as a
      batch/v1 Job, so that its pod template gets the strict core schema too.
  check-manifests.py k8s RENDERED --variant deployment|scaledjob
      The restricted Pod Security Standard on every pod template, probes, grace period,
      references between the objects, the KEDA triggers, the NetworkPolicy, the alert rules'
      PromQL and the policy in the ConfigMap.
  check-manifests.py compose COMPOSE_FILE
      What the Compose schema does not say: init ordering, health checks, grace period,
      secrets as files, the Prometheus config, the policy.
  check-manifests.py policy FILE...
      signet policy files (the rules of the README's "Policy" section).
  check-manifests.py rules RENDERED OUT
      Writes the PrometheusRules' groups as a plain rules file, for `promtool check rules`
      and `promtool test rules` (infra/prometheusrule.test.yaml).

Exit status 1 with one line per problem, 0 when everything holds.
"""

import re
import sys
import tomllib
from pathlib import Path

import yaml

CRD_GROUPS = {"keda.sh", "eventing.keda.sh", "monitoring.coreos.com"}
# Secrets the operator creates (infra/README.md); never rendered from the repository.
EXTERNAL_SECRETS = {"signet-worker", "signet-keda-rabbitmq"}
RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}
METRICS_PORT = 9464
DEFAULT_SHUTDOWN_TIMEOUT = 30  # signet's default SIGNET_SHUTDOWN_TIMEOUT
EGRESS_ALLOWED = {(53, "UDP"), (53, "TCP"), (5672, "TCP"), (5671, "TCP"), (443, "TCP")}
POLICY_FORMATS = {"rpm", "deb", "detached", "apt-release"}
POLICY_FIELDS = {"producers", "sources", "outputs", "formats", "allow_mixed_formats"}


class Problems:
    def __init__(self):
        self.items = []
        self.checked = 0

    def check(self, ok, msg):
        self.checked += 1
        if not ok:
            self.items.append(msg)
        return ok

    def report(self, what):
        for p in self.items:
            print(f"FAIL {what}: {p}")
        print(f"check-manifests {what}: {self.checked - len(self.items)}/{self.checked} assertions hold")
        return 1 if self.items else 0


def load_stream(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def group_of(obj):
    api = str(obj.get("apiVersion", ""))
    return api.split("/")[0] if "/" in api else ""


def name_of(obj):
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


# ---------------------------------------------------------------- split


def cmd_split(rendered, core_out, crds_out):
    docs = load_stream(rendered)
    core, crds, synth = [], [], 0
    for d in docs:
        if group_of(d) in CRD_GROUPS:
            crds.append(d)
            if d.get("kind") == "ScaledJob":
                meta = d.get("metadata", {})
                core.append({
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "metadata": {"name": f"{meta.get('name')}-jobtargetref", "namespace": meta.get("namespace")},
                    "spec": d.get("spec", {}).get("jobTargetRef", {}),
                })
                synth += 1
        else:
            core.append(d)
    with open(core_out, "w", encoding="utf-8") as f:
        yaml.safe_dump_all(core, f, sort_keys=False)
    with open(crds_out, "w", encoding="utf-8") as f:
        yaml.safe_dump_all(crds, f, sort_keys=False)
    print(f"split: {len(docs)} objects: {len(core) - synth} core (+{synth} ScaledJob pod template as a Job), "
          f"{len(crds)} custom resources")
    return 0


# ---------------------------------------------------------------- k8s


def pod_templates(docs):
    """(owner name, pod template) of every workload in the stream."""
    out = []
    for d in docs:
        kind, spec = d.get("kind"), d.get("spec", {}) or {}
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            out.append((name_of(d), spec.get("template", {})))
        elif kind == "CronJob":
            out.append((name_of(d), spec.get("jobTemplate", {}).get("spec", {}).get("template", {})))
        elif kind == "ScaledJob":
            out.append((name_of(d), spec.get("jobTargetRef", {}).get("template", {})))
        elif kind == "Pod":
            out.append((name_of(d), {"metadata": d.get("metadata", {}), "spec": spec}))
    return out


def selector_matches(selector, labels):
    selector = selector or {}
    labels = labels or {}
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        return True
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        k, op, vals = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and labels.get(k) in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def env_of(container, configmaps):
    """The container's environment: envFrom ConfigMaps of the stream, then env values."""
    env = {}
    for ef in container.get("envFrom") or []:
        ref = (ef.get("configMapRef") or {}).get("name")
        if ref in configmaps:
            env.update({k: str(v) for k, v in (configmaps[ref].get("data") or {}).items()})
    for e in container.get("env") or []:
        if "value" in e:
            env[e["name"]] = str(e["value"])
    return env


def mount_for(path, mounts):
    """The volumeMount whose mountPath contains `path` (longest match)."""
    best = None
    for m in mounts:
        mp = m.get("mountPath", "").rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best.get("mountPath", "")):
                best = m
    return best


def check_pod(owner, tmpl, objs, p):
    spec = tmpl.get("spec", {}) or {}
    meta_labels = (tmpl.get("metadata") or {}).get("labels") or {}
    psc = spec.get("securityContext") or {}
    where = f"{owner} pod template"

    p.check(spec.get("automountServiceAccountToken") is False, f"{where}: automountServiceAccountToken must be false")
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        p.check(not spec.get(host), f"{where}: {host} must not be set (restricted PSS)")
    sa = spec.get("serviceAccountName")
    p.check(sa in objs["ServiceAccount"], f"{where}: serviceAccountName {sa!r} is not a rendered ServiceAccount")
    if sa in objs["ServiceAccount"]:
        p.check(objs["ServiceAccount"][sa].get("automountServiceAccountToken") is False,
                f"ServiceAccount/{sa}: automountServiceAccountToken must be false")

    volumes = {v.get("name"): v for v in spec.get("volumes") or []}
    for vname, v in volumes.items():
        kinds = set(v) - {"name"}
        p.check(kinds <= RESTRICTED_VOLUME_TYPES, f"{where}: volume {vname} of type {sorted(kinds)} is not allowed by the restricted PSS")
        if "configMap" in v:
            ref = v["configMap"].get("name")
            p.check(ref in objs["ConfigMap"], f"{where}: volume {vname} names ConfigMap {ref!r}, which is not rendered")
        if "secret" in v:
            ref = v["secret"].get("secretName")
            p.check(ref in objs["Secret"] or ref in EXTERNAL_SECRETS, f"{where}: volume {vname} names unknown Secret {ref!r}")

    grace = spec.get("terminationGracePeriodSeconds")
    containers = spec.get("containers") or []
    p.check(len(containers) >= 1, f"{where}: no containers")
    for c in (spec.get("initContainers") or []) + containers:
        cw = f"{where}: container {c.get('name')}"
        csc = c.get("securityContext") or {}

        def eff(key, csc=csc):
            return csc.get(key, psc.get(key))

        p.check(eff("runAsNonRoot") is True, f"{cw}: runAsNonRoot must be true")
        p.check(eff("runAsUser") == 65532, f"{cw}: runAsUser must be 65532 (got {eff('runAsUser')!r})")
        p.check(eff("runAsGroup") == 65532, f"{cw}: runAsGroup must be 65532 (got {eff('runAsGroup')!r})")
        p.check((eff("seccompProfile") or {}).get("type") == "RuntimeDefault", f"{cw}: seccompProfile.type must be RuntimeDefault")
        p.check(csc.get("allowPrivilegeEscalation") is False, f"{cw}: allowPrivilegeEscalation must be false")
        p.check(csc.get("readOnlyRootFilesystem") is True, f"{cw}: readOnlyRootFilesystem must be true")
        p.check(not csc.get("privileged"), f"{cw}: privileged must not be set")
        caps = csc.get("capabilities") or {}
        p.check("ALL" in (caps.get("drop") or []), f"{cw}: capabilities.drop must contain ALL")
        p.check(not caps.get("add"), f"{cw}: capabilities.add must be empty")
        p.check(all(not port.get("hostPort") for port in c.get("ports") or []), f"{cw}: hostPort is not allowed")
        res = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                p.check(r in (res.get(kind) or {}), f"{cw}: resources.{kind}.{r} must be set")
        mounts = c.get("volumeMounts") or []
        for m in mounts:
            p.check(m.get("name") in volumes, f"{cw}: volumeMount {m.get('name')} has no volume")
        for ef in c.get("envFrom") or []:
            ref = (ef.get("configMapRef") or {}).get("name")
            if ref is not None:
                p.check(ref in objs["ConfigMap"], f"{cw}: envFrom names ConfigMap {ref!r}, which is not rendered")

        if c in (spec.get("initContainers") or []):
            continue
        env = env_of(c, objs["ConfigMap"])
        # The work dir: an emptyDir mounted at SIGNET_WORK_DIR.
        work = env.get("SIGNET_WORK_DIR")
        if p.check(bool(work), f"{cw}: SIGNET_WORK_DIR must be set (the root filesystem is read-only)"):
            m = mount_for(work, mounts)
            p.check(m is not None and "emptyDir" in volumes.get(m.get("name"), {}) and not m.get("readOnly"),
                    f"{cw}: SIGNET_WORK_DIR {work} must be on a writable emptyDir mount")
        # Secrets as files from a Secret volume, the policy from the ConfigMap.
        for var in ("SIGNET_AMQP_URL_FILE", "SIGNET_VAULT_PASSPHRASE_FILE"):
            path = env.get(var)
            if p.check(bool(path), f"{cw}: {var} must be set"):
                m = mount_for(path, mounts)
                p.check(m is not None and "secret" in volumes.get(m.get("name"), {}), f"{cw}: {var}={path} is not on a Secret volume")
        p.check("SIGNET_AMQP_URL" not in env, f"{cw}: the broker URL belongs in a file (SIGNET_AMQP_URL_FILE), not in env")
        policy = env.get("SIGNET_POLICY")
        if p.check(bool(policy), f"{cw}: SIGNET_POLICY must be set"):
            m = mount_for(policy, mounts)
            vol = volumes.get(m.get("name"), {}) if m else {}
            p.check("configMap" in vol, f"{cw}: SIGNET_POLICY={policy} is not on a ConfigMap volume")
            if "configMap" in vol and vol["configMap"].get("name") in objs["ConfigMap"]:
                cm = objs["ConfigMap"][vol["configMap"]["name"]]
                key = policy[len(m["mountPath"].rstrip("/")) + 1:]
                text = (cm.get("data") or {}).get(key)
                if p.check(text is not None, f"{cw}: ConfigMap {cm['metadata']['name']} has no key {key!r} for SIGNET_POLICY"):
                    for err in policy_problems(text, f"ConfigMap {cm['metadata']['name']} {key}"):
                        p.check(False, err)
        for var in ("SIGNET_VAULT", "SIGNET_AUDIT"):
            p.check(bool(env.get(var)), f"{cw}: {var} must be set (env or the signet-config ConfigMap)")
        p.check(env.get("SIGNET_LOG_FORMAT") == "json", f"{cw}: SIGNET_LOG_FORMAT should be json")
        # Metrics port and probes.
        ports = {port.get("name"): port for port in c.get("ports") or []}
        p.check(ports.get("metrics", {}).get("containerPort") == METRICS_PORT, f"{cw}: port `metrics` must be {METRICS_PORT}")
        p.check(env.get("SIGNET_METRICS_ADDR", "").endswith(f":{METRICS_PORT}"), f"{cw}: SIGNET_METRICS_ADDR must listen on :{METRICS_PORT}")
        for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
            get = (c.get(probe) or {}).get("httpGet") or {}
            p.check(get.get("path") == path and get.get("port") == "metrics",
                    f"{cw}: {probe} must be httpGet {path} on port metrics (got {get or None})")
        # Grace period above the worker's drain time.
        timeout = int(env.get("SIGNET_SHUTDOWN_TIMEOUT", DEFAULT_SHUTDOWN_TIMEOUT))
        p.check(isinstance(grace, int) and grace > timeout,
                f"{cw}: terminationGracePeriodSeconds ({grace}) must exceed SIGNET_SHUTDOWN_TIMEOUT ({timeout})")
    return meta_labels


def check_triggers(owner, spec, objs, namespace_env, p):
    p.check(spec.get("minReplicaCount") == 0, f"{owner}: minReplicaCount must be 0 (got {spec.get('minReplicaCount')!r})")
    triggers = spec.get("triggers") or []
    p.check(len(triggers) >= 1, f"{owner}: no triggers")
    # Jobs that wait for approvals are acked: without a trigger on the approvals queue, an
    # approval (or an expiry timer) would wait for a job to wake a worker.
    names = [(t.get("metadata") or {}).get("queueName") for t in triggers]
    for q in (f"{namespace_env}.jobs", f"{namespace_env}.approvals"):
        p.check(q in names, f"{owner}: needs a trigger on {q}")
    for i, t in enumerate(triggers):
        tw = f"{owner}: triggers[{i}]"
        md = t.get("metadata") or {}
        p.check(t.get("type") == "rabbitmq", f"{tw}: type must be rabbitmq")
        p.check(md.get("protocol") == "http", f"{tw}: protocol must be http (amqp counts only ready messages; got {md.get('protocol')!r})")
        p.check(md.get("mode") == "QueueLength", f"{tw}: mode must be QueueLength")
        p.check(str(md.get("excludeUnacknowledged", "false")).lower() != "true", f"{tw}: excludeUnacknowledged must stay false")
        queues = (f"{namespace_env}.jobs", f"{namespace_env}.approvals")
        p.check(md.get("queueName") in queues, f"{tw}: queueName must be {' or '.join(queues)} (SIGNET_NAMESPACE)")
        p.check(not md.get("host"), f"{tw}: the host (with its password) belongs in the TriggerAuthentication's Secret")
        ref = (t.get("authenticationRef") or {}).get("name")
        p.check(ref in objs["TriggerAuthentication"], f"{tw}: authenticationRef {ref!r} is not a rendered TriggerAuthentication")
        if ref in objs["TriggerAuthentication"]:
            params = {s.get("parameter"): s for s in objs["TriggerAuthentication"][ref].get("spec", {}).get("secretTargetRef") or []}
            p.check("host" in params, f"TriggerAuthentication/{ref}: needs a secretTargetRef for parameter host")
            for s in params.values():
                p.check(s.get("name") in objs["Secret"] or s.get("name") in EXTERNAL_SECRETS,
                        f"TriggerAuthentication/{ref}: unknown Secret {s.get('name')!r}")


def check_networkpolicy(np_, templates, p):
    spec = np_.get("spec") or {}
    w = name_of(np_)
    p.check(set(spec.get("policyTypes") or []) == {"Ingress", "Egress"}, f"{w}: policyTypes must be Ingress and Egress")
    for owner, tmpl in templates:
        labels = (tmpl.get("metadata") or {}).get("labels")
        p.check(selector_matches(spec.get("podSelector"), labels), f"{w}: podSelector does not select {owner}'s pods")
    for i, rule in enumerate(spec.get("ingress") or []):
        ports = rule.get("ports") or []
        p.check(bool(ports), f"{w}: ingress[{i}] has no ports (it would admit every port)")
        for port in ports:
            p.check(port.get("port") in ("metrics", METRICS_PORT) and port.get("protocol", "TCP") == "TCP",
                    f"{w}: ingress[{i}] admits {port}; only the metrics port may be reachable")
    for i, rule in enumerate(spec.get("egress") or []):
        ports = rule.get("ports") or []
        p.check(bool(ports), f"{w}: egress[{i}] has no ports (it would allow every port)")
        for port in ports:
            key = (port.get("port"), port.get("protocol", "TCP"))
            p.check(key in EGRESS_ALLOWED and not port.get("endPort"), f"{w}: egress[{i}] allows {key}; only DNS, AMQP(S) and HTTPS")
    have = {(port.get("port"), port.get("protocol", "TCP")) for r in spec.get("egress") or [] for port in r.get("ports") or []}
    p.check(have == EGRESS_ALLOWED, f"{w}: egress must allow exactly {sorted(EGRESS_ALLOWED)} (has {sorted(have)})")


def check_rules(rule_obj, p):
    import promql_parser

    w = name_of(rule_obj)
    names, exprs = set(), []
    for g in rule_obj.get("spec", {}).get("groups") or []:
        for r in g.get("rules") or []:
            expr = str(r.get("expr", ""))
            label = r.get("alert") or r.get("record")
            try:
                promql_parser.parse(expr)
                ok, err = True, ""
            except Exception as e:  # the parser raises ValueError
                ok, err = False, str(e)
            p.check(ok, f"{w}: rule {label}: PromQL does not parse ({err}): {expr.strip()}")
            p.check(label not in names, f"{w}: rule {label} defined twice")
            names.add(label)
            if r.get("alert"):
                p.check(bool((r.get("labels") or {}).get("severity")), f"{w}: alert {label} has no severity label")
                p.check(bool((r.get("annotations") or {}).get("summary")), f"{w}: alert {label} has no summary")
            exprs.append(expr)
    text = "\n".join(exprs)
    p.check("signet_jobs_total" in text and 'outcome="failed"' in text, f"{w}: needs a job failure alert on signet_jobs_total")
    p.check(re.search(r'rabbitmq_queue_messages\{[^}]*queue="signet\.jobs\.dead"', text) is not None,
            f"{w}: needs a dead-letter alert on rabbitmq_queue_messages{{queue=\"signet.jobs.dead\"}}")
    p.check(re.search(r'rabbitmq_queue_messages_ready\{[^}]*queue="signet\.jobs"', text) is not None,
            f"{w}: needs a backlog alert on rabbitmq_queue_messages_ready{{queue=\"signet.jobs\"}}")


def cmd_k8s(rendered, variant):
    docs = load_stream(rendered)
    p = Problems()
    objs = {k: {} for k in ("ConfigMap", "Secret", "ServiceAccount", "TriggerAuthentication", "Deployment",
                            "ScaledObject", "ScaledJob", "PodDisruptionBudget", "NetworkPolicy", "PodMonitor",
                            "PrometheusRule", "Namespace")}
    for d in docs:
        if d.get("kind") in objs:
            objs[d["kind"]][d.get("metadata", {}).get("name")] = d
    count = {k: len(v) for k, v in objs.items()}
    if variant == "deployment":
        p.check(count["Deployment"] == 1 and count["ScaledObject"] == 1 and count["PodDisruptionBudget"] == 1,
                f"the deployment variant needs one Deployment, ScaledObject and PodDisruptionBudget (has {count})")
        p.check(count["ScaledJob"] == 0, "the deployment variant must not contain a ScaledJob")
    else:
        p.check(count["ScaledJob"] == 1, "the scaledjob variant needs one ScaledJob")
        p.check(count["Deployment"] == 0 and count["ScaledObject"] == 0 and count["PodDisruptionBudget"] == 0,
                "the scaledjob variant must not contain the Deployment, ScaledObject or PodDisruptionBudget")
    for k in ("ServiceAccount", "NetworkPolicy", "PodMonitor", "PrometheusRule", "TriggerAuthentication"):
        p.check(count[k] == 1, f"needs exactly one {k} (has {count[k]})")
    p.check(count["Secret"] == 0, "no Secret may be rendered from the repository (the operator creates them)")
    for ns in objs["Namespace"].values():
        p.check((ns.get("metadata", {}).get("labels") or {}).get("pod-security.kubernetes.io/enforce") == "restricted",
                f"{name_of(ns)}: should enforce the restricted Pod Security Standard")

    templates = pod_templates(docs)
    p.check(len(templates) == 1, f"expected one workload, found {[o for o, _ in templates]}")
    ns_env = "signet"
    for owner, tmpl in templates:
        check_pod(owner, tmpl, objs, p)
        for c in (tmpl.get("spec") or {}).get("containers") or []:
            ns_env = env_of(c, objs["ConfigMap"]).get("SIGNET_NAMESPACE", ns_env)

    for so in objs["ScaledObject"].values():
        spec = so.get("spec") or {}
        target = spec.get("scaleTargetRef") or {}
        p.check(target.get("kind", "Deployment") == "Deployment" and target.get("name") in objs["Deployment"],
                f"{name_of(so)}: scaleTargetRef {target} is not a rendered Deployment")
        p.check("replicas" not in (objs["Deployment"].get(target.get("name"), {}).get("spec") or {}),
                f"{name_of(so)}: the Deployment must not set replicas (KEDA owns them)")
        check_triggers(name_of(so), spec, objs, ns_env, p)
    for sj in objs["ScaledJob"].values():
        spec = sj.get("spec") or {}
        check_triggers(name_of(sj), spec, objs, ns_env, p)
        pod = (spec.get("jobTargetRef") or {}).get("template", {}).get("spec", {})
        p.check(pod.get("restartPolicy") in ("Never", "OnFailure"), f"{name_of(sj)}: restartPolicy must be Never or OnFailure")
        args = [a for c in pod.get("containers") or [] for a in (c.get("args") or []) + (c.get("command") or [])]
        p.check("worker" in args and ("--max-jobs" in args or "--exit-when-idle" in args),
                f"{name_of(sj)}: the pod must run `signet worker --max-jobs N` or `--exit-when-idle S` (args {args})")
    for pdb in objs["PodDisruptionBudget"].values():
        for owner, tmpl in templates:
            p.check(selector_matches(pdb.get("spec", {}).get("selector"), (tmpl.get("metadata") or {}).get("labels")),
                    f"{name_of(pdb)}: selector does not select {owner}'s pods")
    for np_ in objs["NetworkPolicy"].values():
        check_networkpolicy(np_, templates, p)
    for pm in objs["PodMonitor"].values():
        spec = pm.get("spec") or {}
        for owner, tmpl in templates:
            p.check(selector_matches(spec.get("selector"), (tmpl.get("metadata") or {}).get("labels")),
                    f"{name_of(pm)}: selector does not select {owner}'s pods")
        p.check(any(e.get("port") == "metrics" and e.get("path", "/metrics") == "/metrics" for e in spec.get("podMetricsEndpoints") or []),
                f"{name_of(pm)}: must scrape port metrics at /metrics")
    for rule in objs["PrometheusRule"].values():
        check_rules(rule, p)
    return p.report(f"k8s ({variant}, {len(docs)} objects)")


# ---------------------------------------------------------------- policy


def policy_problems(text, where):
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        return [f"{where}: not TOML: {e}"]
    errs = []
    keys = doc.get("keys")
    if set(doc) != {"keys"} or not isinstance(keys, dict) or not keys:
        return [f"{where}: must consist of [keys.NAME] sections (found top-level {sorted(doc)})"]
    for name, sec in keys.items():
        w = f"{where}: [keys.{name}]"
        if not isinstance(sec, dict):
            errs.append(f"{w}: not a table")
            continue
        unknown = set(sec) - POLICY_FIELDS
        if unknown:
            errs.append(f"{w}: unknown fields {sorted(unknown)}")
        for field in ("producers", "sources", "outputs", "formats"):
            v = sec.get(field)
            if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
                errs.append(f"{w}: {field} must be a non-empty list of strings")
        for prod in sec.get("producers") or []:
            if isinstance(prod, str) and re.search(r"[*?\[]", prod):
                errs.append(f"{w}: producer {prod!r}: producers are exact user names, no wildcards")
        formats = set(x for x in sec.get("formats") or [] if isinstance(x, str))
        if formats - POLICY_FORMATS:
            errs.append(f"{w}: unknown formats {sorted(formats - POLICY_FORMATS)} (allowed: {sorted(POLICY_FORMATS)}; not auto)")
        if "detached" in formats and formats & {"rpm", "deb", "apt-release"} and sec.get("allow_mixed_formats") is not True:
            errs.append(f"{w}: detached beside package formats needs allow_mixed_formats = true")
        if "allow_mixed_formats" in sec and not isinstance(sec["allow_mixed_formats"], bool):
            errs.append(f"{w}: allow_mixed_formats must be a boolean")
        for field in ("sources", "outputs"):
            for pat in sec.get(field) or []:
                if isinstance(pat, str) and ("/" not in pat or pat.startswith("/")):
                    errs.append(f"{w}: {field} pattern {pat!r} must be BUCKET/KEY-PATTERN")
    return errs


def cmd_policy(files):
    p = Problems()
    for f in files:
        for err in policy_problems(Path(f).read_text(encoding="utf-8"), f):
            p.check(False, err)
        p.check(True, "")
    return p.report(f"policy ({len(files)} files)")


# ---------------------------------------------------------------- compose


def seconds(v):
    if isinstance(v, (int, float)):
        return float(v)
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(v).strip())
    if not m or not any(m.groups()):
        return None
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


def env_dict(env):
    if isinstance(env, dict):
        return {k: "" if v is None else str(v) for k, v in env.items()}
    out = {}
    for item in env or []:
        k, _, v = str(item).partition("=")
        out[k] = v
    return out


def cmd_compose(path):
    path = Path(path)
    base = path.parent
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    p = Problems()
    services = doc.get("services") or {}
    secrets = doc.get("secrets") or {}
    configs = doc.get("configs") or {}

    for name, s in secrets.items():
        p.check("file" in s, f"secret {name}: must come from a file (operator-made, git-ignored)")
    for name, c in configs.items():
        if "file" in c:
            p.check((base / c["file"]).is_file(), f"config {name}: {c['file']} does not exist")

    rabbit = services.get("rabbitmq") or {}
    p.check("healthcheck" in rabbit and not rabbit["healthcheck"].get("disable"), "service rabbitmq: needs a healthcheck")
    workers = {n: s for n, s in services.items() if (s.get("command") or [None])[0] == "worker"}
    p.check(bool(workers), "no worker service (command: [worker, ...])")
    inits = {n for n, s in services.items() if n.startswith("init")}
    p.check(bool(inits), "no one-shot init service")
    for n, s in workers.items():
        w = f"service {n}"
        build = s.get("build") or {}
        p.check(isinstance(build, dict) and build.get("dockerfile") == "infra/Dockerfile" and (base / build.get("context", ".") / "infra/Dockerfile").is_file(),
                f"{w}: must be built from infra/Dockerfile with the repository root as context")
        p.check(int((s.get("deploy") or {}).get("replicas", 1)) >= 2, f"{w}: run several workers (deploy.replicas)")
        deps = s.get("depends_on") or {}
        p.check(isinstance(deps, dict), f"{w}: depends_on must use the long form with conditions")
        if isinstance(deps, dict):
            p.check(any(deps.get(i, {}).get("condition") == "service_completed_successfully" for i in inits),
                    f"{w}: must depend on the init with condition service_completed_successfully")
            p.check(deps.get("rabbitmq", {}).get("condition") == "service_healthy", f"{w}: must wait for rabbitmq to be healthy")
        env = env_dict(s.get("environment"))
        for k, v in env.items():
            p.check(not re.search(r"://[^/@\s]+:[^/@\s]+@", v), f"{w}: {k} holds credentials; use a secret file")
        p.check("SIGNET_AMQP_URL" not in env and env.get("SIGNET_AMQP_URL_FILE", "").startswith("/run/secrets/"),
                f"{w}: the broker URL must come from a secret file (SIGNET_AMQP_URL_FILE)")
        used = {x if isinstance(x, str) else x.get("source") for x in s.get("secrets") or []}
        p.check(used <= set(secrets), f"{w}: uses undefined secrets {sorted(used - set(secrets))}")
        for var in ("SIGNET_AMQP_URL_FILE", "SIGNET_VAULT_PASSPHRASE_FILE"):
            f = env.get(var, "")
            p.check(f.startswith("/run/secrets/") and f[len("/run/secrets/"):] in used, f"{w}: {var}={f!r} is not a secret of the service")
        timeout = int(env.get("SIGNET_SHUTDOWN_TIMEOUT", DEFAULT_SHUTDOWN_TIMEOUT))
        grace = seconds(s.get("stop_grace_period", "10s"))
        p.check(grace is not None and grace > timeout, f"{w}: stop_grace_period ({s.get('stop_grace_period')}) must exceed SIGNET_SHUTDOWN_TIMEOUT ({timeout})")
        p.check(env.get("SIGNET_METRICS_ADDR", "").endswith(f":{METRICS_PORT}"), f"{w}: SIGNET_METRICS_ADDR must be :{METRICS_PORT}")
        p.check(s.get("read_only") is True, f"{w}: read_only root filesystem")
        p.check("ALL" in (s.get("cap_drop") or []), f"{w}: cap_drop ALL")
        p.check(str(s.get("user", "")) == "65532:65532", f"{w}: user 65532:65532")
        # The policy file of the worker, as a compose config.
        pol = env.get("SIGNET_POLICY")
        cfg = [c for c in s.get("configs") or [] if isinstance(c, dict) and c.get("target") == pol]
        if p.check(bool(cfg), f"{w}: SIGNET_POLICY {pol!r} must be a config mounted at that path"):
            src = configs.get(cfg[0].get("source"), {}).get("file")
            if src and (base / src).is_file():
                for err in policy_problems((base / src).read_text(encoding="utf-8"), src):
                    p.check(False, err)

    # Prometheus scrapes every worker and RabbitMQ's per-object metrics.
    prom = services.get("prometheus") or {}
    src = None
    for c in prom.get("configs") or []:
        if isinstance(c, dict) and c.get("target") == "/etc/prometheus/prometheus.yml":
            src = configs.get(c.get("source"), {}).get("file")
    if p.check(bool(src) and (base / src).is_file(), "service prometheus: needs its config at /etc/prometheus/prometheus.yml"):
        pc = yaml.safe_load((base / src).read_text(encoding="utf-8"))
        jobs = pc.get("scrape_configs") or []
        names = [j.get("job_name") for j in jobs]
        p.check(len(names) == len(set(names)), f"{src}: duplicate job_name")
        for n in workers:
            p.check(any(n in (sd.get("names") or []) and sd.get("port") == METRICS_PORT for j in jobs for sd in j.get("dns_sd_configs") or []),
                    f"{src}: no dns_sd_configs job for every replica of {n} on port {METRICS_PORT}")
        p.check(any(j.get("metrics_path") == "/metrics/per-object" for j in jobs), f"{src}: RabbitMQ's per-object metrics (/metrics/per-object) are not scraped")
    return p.report(f"compose ({len(services)} services)")


def cmd_rules(rendered, out):
    """The PrometheusRules' groups as a plain Prometheus rules file (for promtool)."""
    groups = []
    for d in load_stream(rendered):
        if d.get("kind") == "PrometheusRule":
            groups.extend(d.get("spec", {}).get("groups") or [])
    with open(out, "w", encoding="utf-8") as f:
        yaml.safe_dump({"groups": groups}, f, sort_keys=False)
    print(f"rules: {len(groups)} groups, {sum(len(g.get('rules') or []) for g in groups)} rules -> {out}")
    return 0 if groups else 1


def main(argv):
    if len(argv) == 3 and argv[0] == "rules":
        return cmd_rules(argv[1], argv[2])
    if len(argv) >= 4 and argv[0] == "split":
        return cmd_split(argv[1], argv[2], argv[3])
    if len(argv) == 4 and argv[0] == "k8s" and argv[2] == "--variant" and argv[3] in ("deployment", "scaledjob"):
        return cmd_k8s(argv[1], argv[3])
    if len(argv) == 2 and argv[0] == "compose":
        return cmd_compose(argv[1])
    if len(argv) >= 2 and argv[0] == "policy":
        return cmd_policy(argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
