// Checks Kubernetes manifests against the Kubernetes API schemas (the OpenAPI
// schemas of the npm package kubernetes-models): every document of the YAML
// on stdin (e.g. `kubectl kustomize deploy/k8s/overlays/cpu`) must be a
// known apiVersion/kind whose fields have the schema's types, formats and
// enums, with every required field present. (The package's schemas leave
// additionalProperties open: a misspelt optional field is not caught here.)
// Prints one line per object; exits 1 if any is invalid. deploy/validate.sh
// runs it over every overlay.
'use strict';
const fs = require('fs');
const yaml = require('js-yaml');

// kubernetes-models lays out one module per API group/version: "v1" for the
// core group, "apps/v1", "networking.k8s.io/v1", ... The custom resources the
// manifests use come from the packages of their CRDs' schemas, laid out the
// same way: Gateway API (GRPCRoute, HTTPRoute, Gateway), cert-manager
// (Certificate, Issuer), the Prometheus operator (PodMonitor), KEDA.
const CRD_PACKAGES = {
  'gateway.networking.k8s.io': '@kubernetes-models/gateway-api',
  'cert-manager.io': '@kubernetes-models/cert-manager',
  'monitoring.coreos.com': '@kubernetes-models/prometheus-operator',
  'keda.sh': '@kubernetes-models/keda',
};

// (The CRD packages are ES modules: import(), not require().)
async function modelOf(apiVersion, kind) {
  const group = apiVersion.includes('/') ? apiVersion.split('/')[0] : '';
  const pkg = CRD_PACKAGES[group] || 'kubernetes-models';
  let mod;
  try {
    mod = await import(`${pkg}/${apiVersion}`);
  } catch (e) {
    throw new Error(`unknown apiVersion ${apiVersion}`);
  }
  if (typeof mod[kind] !== 'function') throw new Error(`unknown kind ${kind} in ${apiVersion}`);
  return mod[kind];
}

async function main() {
  const docs = yaml.loadAll(fs.readFileSync(0, 'utf8')).filter((d) => d);
  if (docs.length === 0) throw new Error('no manifests on stdin');
  let bad = 0;
  for (const doc of docs) {
    const name = `${doc.kind}/${doc.metadata && doc.metadata.name}`;
    try {
      const Model = await modelOf(doc.apiVersion, doc.kind);
      const obj = new Model(doc);
      obj.validate();
      console.log(`ok   ${name}`);
    } catch (e) {
      bad++;
      console.log(`FAIL ${name}: ${e.message.split('\n').slice(0, 6).join(' | ')}`);
    }
  }
  if (bad) {
    console.log(`${bad} of ${docs.length} objects invalid`);
    process.exit(1);
  }
  console.log(`all ${docs.length} objects valid`);
}

main().catch((e) => {
  console.log(`FAIL ${e.message}`);
  process.exit(1);
});
