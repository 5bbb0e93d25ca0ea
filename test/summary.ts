// Prints the totals of a vitest JSON report on a line of its own: "N passed, N failed, N skipped".
// A run that failed outside any test (a file that does not load, the global teardown finding
// leftovers) counts as one failure, so the line never reads as all green when the run was not.
import { readFileSync } from "node:fs";

const path = process.argv[2] ?? "test-results/vitest.json";
const vitestExit = Number(process.argv[3] ?? 0);
try {
  const report = JSON.parse(readFileSync(path, "utf8"));
  const failedOutside = report.numFailedTests === 0 && (report.numFailedTestSuites > 0 || vitestExit !== 0);
  const failed = report.numFailedTests + (failedOutside ? 1 : 0);
  const skipped = report.numPendingTests + report.numTodoTests;
  console.log(`${report.numPassedTests} passed, ${failed} failed, ${skipped} skipped`);
} catch (err) {
  console.log("0 passed, 1 failed");
  console.error(`no test report at ${path}: ${(err as Error).message}`);
}
