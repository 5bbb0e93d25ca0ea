#!/usr/bin/env node
// The one command line of nodemesh: each subcommand starts one component.

const HELP = `Usage: nodemesh <command> [options]

Commands:
  agent     run the node agent (one per node)
  init      install a pod's traffic redirection and enroll it with the node agent
  help      show this help

Run 'nodemesh <command> --help' for the options of a command.
`;

const [command, ...args] = process.argv.slice(2);

async function main(): Promise<number> {
  switch (command) {
    case "agent":
      return (await import("../agent/cli.ts")).runAgent(args);
    case "init":
      return (await import("../init-container/cli.ts")).runInit(args);
    case undefined:
    case "help":
    case "-h":
    case "--help":
      process.stdout.write(HELP);
      return 0;
    default:
      process.stderr.write(`nodemesh: unknown command "${command}"\n\n${HELP}`);
      return 2;
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: Error) => {
    process.stderr.write(`nodemesh ${command}: ${err.message}\n`);
    process.exitCode = 1;
  },
);
