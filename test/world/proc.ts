// A long-running process started by a world (server, agent, load generator): its output is kept
// as lines so that tests can wait for "listening" and show what it printed when something fails.
import { type ChildProcess, spawn } from "node:child_process";

/** Lines kept per process; older ones are dropped so a chatty process cannot fill memory. */
const MAX_LINES = 10_000;
const ERROR_TAIL_LINES = 40;

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ProcOptions {
  /** Added to the test process's environment. */
  env?: Record<string, string>;
  /** Shown in errors; defaults to the command. */
  name?: string;
  /** "ignore" (default) gives the process an empty stdin. */
  stdin?: "pipe" | "ignore";
}

/** A string matches lines that contain it. */
export type LineMatcher = string | RegExp | ((line: string) => boolean);

export class Proc {
  readonly name: string;
  readonly child: ChildProcess;
  /** stdout and stderr, interleaved, one entry per line (the last MAX_LINES). */
  readonly lines: string[] = [];
  /** Resolves when the process has exited (never rejects). */
  readonly exited: Promise<Exit>;
  #exit: Exit | undefined;
  #closed = false;
  /** Waiters of waitForLine: called with each new line, and with undefined once output ends. */
  readonly #listeners = new Set<(line: string | undefined) => void>();

  constructor(command: string, args: readonly string[], options: ProcOptions = {}) {
    this.name = options.name ?? command;
    this.child = spawn(command, args, {
      env: { ...process.env, ...options.env },
      stdio: [options.stdin ?? "ignore", "pipe", "pipe"],
    });
    for (const stream of [this.child.stdout!, this.child.stderr!]) {
      let partial = "";
      stream.setEncoding("utf8");
      stream.on("data", (chunk: string) => {
        const parts = (partial + chunk).split("\n");
        partial = parts.pop()!;
        for (const line of parts) this.#push(line);
      });
      stream.on("end", () => partial && this.#push(partial));
    }
    this.exited = new Promise((resolve) => {
      this.child.on("exit", (code, signal) => {
        this.#exit = { code, signal };
        resolve(this.#exit);
      });
      this.child.on("error", (err) => {
        // Spawning failed: there will be no "exit" event.
        this.#push(`spawn failed: ${err.message}`);
        this.#exit ??= { code: null, signal: null };
        resolve(this.#exit);
      });
    });
    this.child.on("close", () => {
      this.#closed = true;
      for (const listener of this.#listeners) listener(undefined);
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** The exit status, or undefined while it runs. */
  get exit(): Exit | undefined {
    return this.#exit;
  }

  /** Resolves with the first line (already printed or to come) that matches. */
  waitForLine(match: LineMatcher, timeoutMs = 10_000): Promise<string> {
    const test =
      typeof match === "function"
        ? match
        : typeof match === "string"
          ? (line: string) => line.includes(match)
          : (line: string) => line.search(match) >= 0; // unlike test(), search() ignores a /g regex's lastIndex
    const found = this.lines.find(test);
    if (found !== undefined) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const finish = (settle: () => void) => {
        clearTimeout(timer);
        this.#listeners.delete(listener);
        settle();
      };
      const listener = (line: string | undefined) => {
        if (line === undefined)
          finish(() => reject(this.#error(`exited (${describe(this.#exit)}) before a line matched ${match}`)));
        else if (test(line)) finish(() => resolve(line));
      };
      const timer = setTimeout(
        () => finish(() => reject(this.#error(`no line matched ${match} within ${timeoutMs} ms`))),
        timeoutMs,
      );
      this.#listeners.add(listener);
      if (this.#closed) listener(undefined);
    });
  }

  /** Signals the process unless it has already exited. */
  kill(signal: NodeJS.Signals = "SIGTERM"): void {
    if (this.#exit === undefined) this.child.kill(signal);
  }

  /**
   * Sends `signal`, then SIGKILL if the process is still there after `graceMs`. Resolves with the exit
   * status once it is gone, or undefined if even SIGKILL did not end it within a second.
   */
  async stop(signal: NodeJS.Signals = "SIGTERM", graceMs = 500): Promise<Exit | undefined> {
    this.kill(signal);
    await within(this.exited, graceMs);
    this.kill("SIGKILL");
    return within(this.exited, 1_000);
  }

  #push(line: string): void {
    this.lines.push(line);
    if (this.lines.length > MAX_LINES) this.lines.splice(0, this.lines.length - MAX_LINES);
    for (const listener of this.#listeners) listener(line);
  }

  #error(what: string): Error {
    const tail = this.lines.slice(-ERROR_TAIL_LINES).join("\n  ");
    return new Error(`${this.name} (pid ${this.pid}): ${what}; output:\n  ${tail}`);
  }
}

function describe(exit: Exit | undefined): string {
  if (!exit) return "output closed";
  return exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`;
}

/** `promise`'s value, or undefined if it takes longer than `ms`. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
