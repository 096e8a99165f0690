#!/usr/bin/env python3
"""Adapts a rendered overlay of deploy/k8s (kubectl kustomize) to `podman kube play`.

podman 4.3 plays Deployments (one pod per replica, named <deployment>-pod-<i>)
and PersistentVolumeClaims (a named volume), and skips what it does not
implement (Namespace, Service, NetworkPolicy). Without Services, names like
"kv-store" do not resolve; pods are found by their pod names on the podman
network instead. And podman publishes every containerPort on the host (as if
it were a hostPort): two prefill pods would both claim the host's port 9152,
and the store would be open on the host. This script changes only those (the
addresses, no `ports`) and the image name:

  podman_kube.py RENDERED OUT_DIR IMAGE
      writes OUT_DIR/pvc.yaml (the PVC: played first, so that the volume can be
      filled before a pod mounts it; kube play refuses to make a volume that
      exists) and OUT_DIR/backends.yaml (the KV store, prefill) with --kv_store
      pointing at the store's pod, and prints the prefill pod names;
  podman_kube.py RENDERED OUT_DIR IMAGE PREFILL_TARGET
      writes OUT_DIR/decode.yaml with --kv_store as above and --prefill set to
      PREFILL_TARGET (e.g. ipv4:10.89.0.5:50052,10.89.0.6:50052: every prefill
      pod, which gRPC's round robin spreads calls over, as a headless Service
      would give them).
Every other field is kept as rendered.
"""
import sys

import yaml


def pod_name(deployment, index=0):
    return f"{deployment}-pod-{index}"


def rewrite_args(doc, prefill_target):
    for container in doc["spec"]["template"]["spec"]["containers"]:
        args = []
        for arg in container.get("args", []):
            if arg.startswith("--kv_store="):
                arg = f"--kv_store={pod_name('nanoserve-kv-store')}:50051"
            elif arg.startswith("--prefill=") and prefill_target is not None:
                arg = f"--prefill={prefill_target}"
            args.append(arg)
        container["args"] = args


def main():
    rendered, out_dir, image = sys.argv[1:4]
    prefill_target = sys.argv[4] if len(sys.argv) > 4 else None
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    keep, pvcs = [], []
    for doc in docs:
        if doc["kind"] == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                container["image"] = image
                container.pop("ports", None)
            rewrite_args(doc, prefill_target)
        name = doc["metadata"]["name"]
        is_decode = doc["kind"] == "Deployment" and name == "nanoserve-decode"
        if prefill_target is None:
            if doc["kind"] == "PersistentVolumeClaim":
                pvcs.append(doc)
            elif doc["kind"] == "Deployment" and not is_decode:
                keep.append(doc)
        elif is_decode:
            keep.append(doc)
    out = f"{out_dir}/{'decode' if prefill_target else 'backends'}.yaml"
    with open(out, "w") as f:
        yaml.safe_dump_all(keep, f, sort_keys=False)
    if prefill_target is None:
        with open(f"{out_dir}/pvc.yaml", "w") as f:
            yaml.safe_dump_all(pvcs, f, sort_keys=False)
        prefill = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "nanoserve-prefill")
        print(" ".join(pod_name("nanoserve-prefill", i) for i in range(prefill["spec"]["replicas"])))


if __name__ == "__main__":
    main()
