#!/usr/bin/env python3
"""Writes the JSON schemas kubeconform validates deploy/k8s against (called by ./generate; see its header).

  convert.py core SCHEMA_DIR OUT_DIR KIND-FILE...   Kubernetes' own kinds: from kubernetes-validate's
      "local-strict" schemas, each made standalone (the definitions it reaches copied under $defs, no $id, no
      remote $ref), so kubeconform never needs the network.
  convert.py crd OUT_DIR CRD.yaml...                 A CustomResourceDefinition's openAPIV3Schema per served
      version, made strict like kubeconform's openapi2jsonschema (an object with properties admits no others
      unless x-kubernetes-preserve-unknown-fields), written as OUT_DIR/GROUP/KIND_VERSION.json.

Descriptions are dropped (they are most of the bytes and validate nothing).
"""
import json
import os
import sys

import yaml


def strip_descriptions(node):
    if isinstance(node, dict):
        return {k: strip_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def refs(node, found):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                found.add(v.split("#/$defs/", 1)[1])
            else:
                refs(v, found)
    elif isinstance(node, list):
        for v in node:
            refs(v, found)


def local_refs(node):
    if isinstance(node, dict):
        return {
            k: ("#/$defs/" + v.split("#/$defs/", 1)[1] if k == "$ref" else local_refs(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [local_refs(v) for v in node]
    return node


def core(schema_dir, out_dir, kinds):
    defs = json.load(open(os.path.join(schema_dir, "_definitions.json")))["$defs"]
    os.makedirs(out_dir, exist_ok=True)
    for kind in kinds:
        schema = json.load(open(os.path.join(schema_dir, kind)))
        schema.pop("$id", None)
        needed, todo = set(), set()
        refs(schema, todo)
        while todo:
            name = todo.pop()
            if name in needed:
                continue
            needed.add(name)
            refs(defs[name], todo)
        schema = local_refs(strip_descriptions(schema))
        schema["$defs"] = {n: local_refs(strip_descriptions(defs[n])) for n in sorted(needed)}
        with open(os.path.join(out_dir, kind), "w") as f:
            json.dump(schema, f, indent=1, sort_keys=True)
            f.write("\n")


def strict(node):
    if isinstance(node, list):
        return [strict(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: strict(v) for k, v in node.items() if k != "description"}
    if node.pop("nullable", False) and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        node["additionalProperties"] = False
    return node


def crd(out_dir, files):
    for path in files:
        for doc in yaml.safe_load_all(open(path)):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            group, kind = spec["group"], spec["names"]["kind"].lower()
            for version in spec["versions"]:
                if not version.get("served", True):
                    continue
                schema = strict(version["schema"]["openAPIV3Schema"])
                schema["$schema"] = "http://json-schema.org/draft-07/schema#"
                os.makedirs(os.path.join(out_dir, group), exist_ok=True)
                with open(os.path.join(out_dir, group, f"{kind}_{version['name']}.json"), "w") as f:
                    json.dump(schema, f, indent=1, sort_keys=True)
                    f.write("\n")


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "core":
        core(args[0], args[1], args[2:])
    elif mode == "crd":
        crd(args[0], args[1:])
    else:
        sys.exit(f"unknown mode {mode}")
