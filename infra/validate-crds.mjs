#!/usr/bin/env node
// Validates the custom resources of signet's Kubernetes manifests (KEDA's keda.sh and
// prometheus-operator's monitoring.coreos.com kinds) with the @kubernetes-models packages.
//
//   node infra/validate-crds.mjs --node-modules DIR FILE...      (FILE: a YAML stream, - = stdin)
//
// Two checks per object, and an object fails if either finds a problem:
// 1. `new Kind(obj).validate()` from @kubernetes-models/keda or /prometheus-operator: the
//    JSON schema generated from the CRD's Go types (types, required fields, enums, formats).
//    Those schemas allow unknown properties, so a misspelt optional field would pass them.
// 2. Unknown fields: every key of the object must be a property of the model's TypeScript
//    declaration (the package's .d.ts files, generated from the same Go types), at every
//    depth, including embedded Kubernetes types such as a ScaledJob's JobSpec.
// A kind without a model is an error: nothing is skipped silently. Exit 0 when every object
// passed, 1 otherwise, 2 on a usage or setup error.

import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

// apiVersion -> package subpath exporting one class per kind.
const MODELS = {
  "keda.sh/v1alpha1": "@kubernetes-models/keda/keda.sh/v1alpha1",
  "eventing.keda.sh/v1alpha1": "@kubernetes-models/keda/eventing.keda.sh/v1alpha1",
  "monitoring.coreos.com/v1": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1",
  "monitoring.coreos.com/v1alpha1": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1alpha1",
  "monitoring.coreos.com/v1beta1": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1beta1",
};

function usage(msg) {
  console.error(`validate-crds: ${msg}\nusage: node validate-crds.mjs --node-modules DIR FILE...`);
  process.exit(2);
}

const args = process.argv.slice(2);
let nodeModules = null;
let quiet = false;
const files = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--node-modules") nodeModules = args[++i];
  else if (args[i] === "--quiet") quiet = true;
  else files.push(args[i]);
}
if (!nodeModules) usage("--node-modules is required");
if (!files.length) usage("no input files");
nodeModules = path.resolve(nodeModules);

// --- package resolution (the packages are ESM-only and live outside this script's tree) ---

// "@scope/pkg/sub/path" -> [package dir, "./sub/path"]
function splitSpec(spec) {
  const parts = spec.split("/");
  const n = spec.startsWith("@") ? 2 : 1;
  return [path.join(nodeModules, ...parts.slice(0, n)), "./" + parts.slice(n).join("/")];
}

const pkgJsonCache = new Map();
function exportsOf(dir) {
  if (!pkgJsonCache.has(dir)) {
    const file = path.join(dir, "package.json");
    if (!fs.existsSync(file)) throw new Error(`package not installed: ${file} is missing`);
    pkgJsonCache.set(dir, JSON.parse(fs.readFileSync(file, "utf8")).exports ?? null);
  }
  return pkgJsonCache.get(dir);
}

// Resolve a package specifier to a file for a condition ("import" or "types").
function resolvePkg(spec, condition) {
  let [dir, sub] = splitSpec(spec);
  if (sub === "./") sub = ".";
  let exp = exportsOf(dir);
  if (exp && (typeof exp === "string" || exp.import || exp.types)) exp = { ".": exp };
  const pick = (target, star) => {
    let t = typeof target === "string" ? target : target[condition];
    if (!t) return null;
    if (star !== undefined) t = t.replace("*", star);
    return path.join(dir, t);
  };
  if (exp) {
    if (exp[sub]) {
      const r = pick(exp[sub]);
      if (r) return r;
    }
    for (const [key, target] of Object.entries(exp)) {
      const star = key.indexOf("*");
      if (star < 0) continue;
      const pre = key.slice(0, star);
      const post = key.slice(star + 1);
      if (sub.startsWith(pre) && sub.endsWith(post) && sub.length >= pre.length + post.length) {
        const r = pick(target, sub.slice(pre.length, sub.length - post.length));
        if (r) return r;
      }
    }
    throw new Error(`${spec}: not exported by ${dir}/package.json (condition ${condition})`);
  }
  return path.join(dir, sub + (condition === "types" ? ".d.ts" : ".js"));
}

// --- a reader for the subset of TypeScript that the generated .d.ts files use ---

function tokenize(src) {
  const toks = [];
  const re = /\s+|\/\*[\s\S]*?\*\/|\/\/[^\n]*|("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|([A-Za-z_$][\w$]*)|(-?\d+(?:\.\d+)?)|([{}()[\]<>:;,?|&=.*])/y;
  let m;
  let pos = 0;
  while (pos < src.length) {
    re.lastIndex = pos;
    m = re.exec(src);
    if (!m) throw new Error(`cannot read TypeScript at: ${src.slice(pos, pos + 40)}`);
    pos = re.lastIndex;
    if (m[1] !== undefined) toks.push({ t: "str", v: m[1].slice(1, -1) });
    else if (m[2] !== undefined) toks.push({ t: "id", v: m[2] });
    else if (m[3] !== undefined) toks.push({ t: "num", v: m[3] });
    else if (m[4] !== undefined) toks.push({ t: "p", v: m[4] });
  }
  return toks;
}

// Type expressions: { k: "union", of } | { k: "name", name, args } | { k: "lit" } |
// { k: "obj", props: Map, index }.
class Parser {
  constructor(toks) {
    this.toks = toks;
    this.i = 0;
  }
  peek(v) {
    const t = this.toks[this.i];
    return t && (v === undefined || t.v === v) ? t : null;
  }
  eat(v) {
    const t = this.toks[this.i];
    if (!t || (v !== undefined && t.v !== v)) {
      throw new Error(`expected ${v ?? "a token"}, found ${t ? t.v : "the end"}`);
    }
    this.i++;
    return t;
  }
  union() {
    const of = [];
    if (this.peek("|")) this.eat("|");
    of.push(this.postfix());
    while (this.peek("|") || this.peek("&")) {
      this.eat();
      of.push(this.postfix());
    }
    return of.length === 1 ? of[0] : { k: "union", of };
  }
  postfix() {
    let ty = this.primary();
    while (this.peek("[") && this.toks[this.i + 1]?.v === "]") {
      this.eat("[");
      this.eat("]");
      ty = { k: "name", name: "Array", args: [ty] };
    }
    return ty;
  }
  primary() {
    const t = this.eat();
    if (t.t === "str" || t.t === "num") return { k: "lit" };
    if (t.v === "(") {
      const u = this.union();
      this.eat(")");
      return u;
    }
    if (t.v === "{") return this.members("}");
    if (t.t === "id") {
      let name = t.v;
      if (name === "import") {
        // import("pkg").Name: only in static members, which are not data
        this.eat("(");
        this.eat();
        this.eat(")");
        this.eat(".");
        name = this.eat().v;
      }
      while (this.peek(".")) {
        this.eat(".");
        name += "." + this.eat().v;
      }
      const args = [];
      if (this.peek("<")) {
        this.eat("<");
        args.push(this.union());
        while (this.peek(",")) {
          this.eat(",");
          args.push(this.union());
        }
        this.eat(">");
      }
      if (this.peek("[") && this.toks[this.i + 1]?.v !== "]") {
        // indexed access type, e.g. IScaledObject["apiVersion"]
        this.eat("[");
        this.union();
        this.eat("]");
        return { k: "lit" };
      }
      return { k: "name", name, args };
    }
    throw new Error(`unexpected ${t.v} in a type`);
  }
  // Object members up to `close`: "name"?: T;  [key: string]: T;
  members(close) {
    const props = new Map();
    let index = null;
    while (!this.peek(close)) {
      if (this.peek(";") || this.peek(",")) {
        this.eat();
        continue;
      }
      if (this.peek("[")) {
        this.eat("[");
        this.eat();
        this.eat(":");
        this.union();
        this.eat("]");
        this.eat(":");
        index = this.union();
        continue;
      }
      let t = this.eat();
      if (t.v === "static" || t.v === "readonly") {
        // class statics are not data fields
        if (t.v === "static") {
          this.skipMember(close);
          continue;
        }
        t = this.eat();
      }
      if (t.v === "constructor" && this.peek("(")) {
        this.skipMember(close);
        continue;
      }
      const optional = !!this.peek("?");
      if (optional) this.eat("?");
      if (this.peek("(")) {
        this.skipMember(close);
        continue;
      }
      this.eat(":");
      props.set(t.v, { type: this.union(), optional });
    }
    this.eat(close);
    return { k: "obj", props, index };
  }
  skipMember(close) {
    let depth = 0;
    while (this.i < this.toks.length) {
      const v = this.toks[this.i].v;
      if (depth === 0 && (v === ";" || v === close)) {
        if (v === ";") this.i++;
        return;
      }
      if (v === "(" || v === "{" || v === "<" || v === "[") depth++;
      if (v === ")" || v === "}" || v === ">" || v === "]") depth--;
      this.i++;
    }
  }
}

// One .d.ts file: its imports, interfaces, type aliases and re-export names.
const declCache = new Map();
function declarations(file) {
  if (declCache.has(file)) return declCache.get(file);
  if (!fs.existsSync(file)) throw new Error(`missing declaration file ${file}`);
  const toks = tokenize(fs.readFileSync(file, "utf8"));
  const d = { file, imports: new Map(), interfaces: new Map(), aliases: new Map(), renames: new Map() };
  const p = new Parser(toks);
  while (p.i < toks.length) {
    const t = toks[p.i];
    if (t.v === "import" && toks[p.i + 1]?.v === "{") {
      p.eat("import");
      p.eat("{");
      const names = [];
      while (!p.peek("}")) {
        if (p.peek(",")) {
          p.eat(",");
          continue;
        }
        if (p.peek("type")) p.eat("type");
        const orig = p.eat().v;
        let local = orig;
        if (p.peek("as")) {
          p.eat("as");
          local = p.eat().v;
        }
        names.push([local, orig]);
      }
      p.eat("}");
      p.eat("from");
      const spec = p.eat().v;
      for (const [local, orig] of names) d.imports.set(local, { spec, name: orig });
      continue;
    }
    if (t.v === "export" && toks[p.i + 1]?.v === "interface") {
      p.eat("export");
      p.eat("interface");
      const name = p.eat().v;
      const bases = [];
      if (p.peek("extends")) {
        p.eat("extends");
        bases.push(p.union());
        while (p.peek(",")) {
          p.eat(",");
          bases.push(p.union());
        }
      }
      p.eat("{");
      const body = p.members("}");
      d.interfaces.set(name, { ...body, bases });
      continue;
    }
    if (t.v === "export" && toks[p.i + 1]?.v === "type" && toks[p.i + 2]?.v === "{") {
      p.eat("export");
      p.eat("type");
      p.eat("{");
      while (!p.peek("}")) {
        if (p.peek(",")) {
          p.eat(",");
          continue;
        }
        const orig = p.eat().v;
        let pub = orig;
        if (p.peek("as")) {
          p.eat("as");
          pub = p.eat().v;
        }
        d.renames.set(pub, orig);
      }
      p.eat("}");
      continue;
    }
    if (t.v === "export" && toks[p.i + 1]?.v === "type" && toks[p.i + 3]?.v === "=") {
      p.eat("export");
      p.eat("type");
      const name = p.eat().v;
      p.eat("=");
      d.aliases.set(name, p.union());
      continue;
    }
    p.i++;
  }
  declCache.set(file, d);
  return d;
}

const PRIMITIVES = new Set(["string", "number", "boolean", "any", "unknown", "object", "null", "undefined", "never", "Date"]);

// A named type in a file -> { decl, iface } or { decl, alias } or { prim }.
function lookup(decl, name, seen = 0) {
  if (seen > 20) throw new Error(`type ${name}: too many re-exports`);
  if (PRIMITIVES.has(name)) return { prim: name };
  if (name === "TypeMeta") {
    return { decl, iface: { k: "obj", index: null, bases: [], props: new Map([["apiVersion", {}], ["kind", {}]]) } };
  }
  if (decl.interfaces.has(name)) return { decl, name, iface: decl.interfaces.get(name) };
  if (decl.aliases.has(name)) return { decl, alias: decl.aliases.get(name) };
  if (decl.renames.has(name)) return lookup(decl, decl.renames.get(name), seen + 1);
  const imp = decl.imports.get(name);
  if (imp) {
    const file = imp.spec.startsWith(".")
      ? path.resolve(path.dirname(decl.file), imp.spec.replace(/\.js$/, "") + ".d.ts")
      : resolvePkg(imp.spec, "types");
    return lookup(declarations(file), imp.name, seen + 1);
  }
  throw new Error(`cannot resolve type ${name} in ${decl.file}`);
}

function propsOf(decl, iface) {
  const props = new Map(iface.props);
  for (const b of iface.bases ?? []) {
    if (b.k !== "name") continue;
    const r = lookup(decl, b.name);
    if (r.iface) for (const [k, v] of propsOf(r.decl, r.iface)) props.set(k, v);
  }
  return props;
}

const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

// Collect unknown-field errors of `value` against type `ty` (declared in `decl`).
function strict(value, ty, decl, where, errors, depth = 0) {
  if (depth > 60 || value === null || value === undefined) return;
  switch (ty.k) {
    case "lit":
      return;
    case "union": {
      // Check against the object-shaped alternatives only; pass if one of them fits.
      if (!isObj(value) && !Array.isArray(value)) return;
      let best = null;
      for (const alt of ty.of) {
        const errs = [];
        strict(value, alt, decl, where, errs, depth + 1);
        if (!errs.length) return;
        if (!best || errs.length < best.length) best = errs;
      }
      if (best) errors.push(...best);
      return;
    }
    case "obj": {
      if (!isObj(value)) return;
      for (const [k, v] of Object.entries(value)) {
        const p = ty.props.get(k);
        if (p) strict(v, p.type, decl, `${where}.${k}`, errors, depth + 1);
        else if (ty.index) strict(v, ty.index, decl, `${where}.${k}`, errors, depth + 1);
        else errors.push(`${where}.${k}: unknown field`);
      }
      return;
    }
    case "name": {
      if (ty.name === "Array" || ty.name === "ReadonlyArray") {
        if (Array.isArray(value)) value.forEach((v, i) => strict(v, ty.args[0], decl, `${where}[${i}]`, errors, depth + 1));
        return;
      }
      if (ty.name === "Record" && ty.args.length === 2) {
        if (isObj(value)) for (const [k, v] of Object.entries(value)) strict(v, ty.args[1], decl, `${where}.${k}`, errors, depth + 1);
        return;
      }
      const r = lookup(decl, ty.name);
      if (r.prim) return;
      if (r.alias) return strict(value, r.alias, r.decl, where, errors, depth + 1);
      if (!isObj(value)) return;
      const props = propsOf(r.decl, r.iface);
      for (const [k, v] of Object.entries(value)) {
        const p = props.get(k);
        if (p) {
          if (p.type) strict(v, p.type, r.decl, `${where}.${k}`, errors, depth + 1);
        } else if (r.iface.index) {
          strict(v, r.iface.index, r.decl, `${where}.${k}`, errors, depth + 1);
        } else {
          errors.push(`${where}.${k}: unknown field (${r.name ?? ty.name} has no such property)`);
        }
      }
      return;
    }
    default:
      throw new Error(`internal: type node ${ty.k}`);
  }
}

// --- main ---

const yamlMod = await import(pathToFileURL(resolvePkg("js-yaml", "import")).href);
const yaml = yamlMod.default ?? yamlMod;

// One module per kind (PKG/GROUP/VERSION/KIND): loading only those is much faster than the
// version's index of every kind.
const modules = new Map();
async function modelFor(apiVersion, kind) {
  const spec = MODELS[apiVersion];
  if (!spec || typeof kind !== "string" || !/^[A-Z][A-Za-z0-9]*$/.test(kind)) return null;
  const key = `${spec}/${kind}`;
  if (!modules.has(key)) {
    let file = null;
    try {
      file = resolvePkg(key, "import");
    } catch {
      file = null;
    }
    modules.set(key, file && fs.existsSync(file) ? await import(pathToFileURL(file).href) : null);
  }
  const cls = modules.get(key)?.[kind];
  if (typeof cls !== "function" || cls.apiVersion !== apiVersion || cls.kind !== kind) return null;
  return { cls, types: resolvePkg(key, "types") };
}

let checked = 0;
let failed = 0;
const perKind = new Map();
for (const f of files) {
  const text = fs.readFileSync(f === "-" ? 0 : f, "utf8");
  const docs = yaml.loadAll(text).filter((d) => d !== null && d !== undefined);
  for (const obj of docs) {
    checked++;
    const id = `${obj?.apiVersion}/${obj?.kind} ${obj?.metadata?.namespace ? obj.metadata.namespace + "/" : ""}${obj?.metadata?.name}`;
    const problems = [];
    const model = isObj(obj) ? await modelFor(obj.apiVersion, obj.kind) : null;
    if (!model) {
      problems.push(`no model for apiVersion ${obj?.apiVersion}, kind ${obj?.kind} (known: ${Object.keys(MODELS).join(", ")})`);
    } else {
      try {
        new model.cls(obj).validate();
      } catch (e) {
        problems.push(`schema: ${e.message}`);
      }
      try {
        strict(obj, { k: "name", name: `I${obj.kind}`, args: [] }, declarations(model.types), obj.kind, problems);
      } catch (e) {
        console.error(`validate-crds: cannot check unknown fields of ${id}: ${e.message}`);
        process.exit(2);
      }
    }
    if (problems.length) {
      failed++;
      console.log(`FAIL ${id}`);
      for (const p of problems) console.log(`  - ${p}`);
    } else {
      perKind.set(obj.kind, (perKind.get(obj.kind) ?? 0) + 1);
      if (!quiet) console.log(`ok   ${id}`);
    }
  }
}
const kinds = [...perKind].map(([k, n]) => `${n} ${k}`).join(", ");
console.log(`validate-crds: ${checked - failed}/${checked} custom resources valid${kinds ? ` (${kinds})` : ""}`);
process.exit(failed ? 1 : 0);
