// The init container's errors, one table with stable codes. The CLI prints `[code] message`;
// the code tells a reader of pod logs which step failed without parsing the message.

export const INIT_ERROR_CODES = {
  /** A flag, environment variable or exclusion list is malformed. Exit code 2. */
  INVALID_ARGUMENT: "invalid_argument",
  /** `iptables-save` printed something that is not a dump of the nat and raw tables. */
  BAD_DUMP: "bad_dump",
  /** iptables-save / iptables-restore failed or could not be started. */
  IPTABLES_FAILED: "iptables_failed",
  /** The eBPF mode cannot run on this machine (the message names what is missing). */
  EBPF_UNSUPPORTED: "ebpf_unsupported",
  /** bpftool failed to load, pin, attach, fill or remove the eBPF programs. */
  EBPF_FAILED: "ebpf_failed",
  /** The agent answered 4xx: retrying the same request cannot help. */
  AGENT_REJECTED: "agent_rejected",
  /** The agent did not answer successfully before the deadline. */
  AGENT_UNREACHABLE: "agent_unreachable",
} as const;

export type InitErrorCode = (typeof INIT_ERROR_CODES)[keyof typeof INIT_ERROR_CODES];

export class InitError extends Error {
  readonly code: InitErrorCode;
  constructor(code: InitErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "InitError";
    this.code = code;
  }
}
