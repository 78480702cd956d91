/**
 * The incrcell comm protocol, version 1 (labextension/PROTOCOL.md).
 *
 * Types of the messages both sides exchange, builders for the ones the
 * frontend sends, and a validator for the ones the kernel sends.  Pure: no
 * JupyterLab imports, so the unit tests exercise it directly.
 */

export const PROTOCOL_VERSION = 1;
export const COMM_TARGET = 'incrcell';

export const CELL_STATES = ['restored', 'ran', 'stale', 'uncacheable', 'error', 'not_run'] as const;
export type CellStateName = (typeof CELL_STATES)[number];

export const PREDICTIONS = ['restore', 'run', 'unknown'] as const;
export type Prediction = (typeof PREDICTIONS)[number];

/** Where a restored cell's cache entry came from: this machine's cache or the team cache. */
export const ORIGINS = ['local', 'remote'] as const;
export type Origin = (typeof ORIGINS)[number];

/** One upstream cell a cell reads from, and the names it reads. */
export interface Dependency {
  id: string;
  names: string[];
}

/** What the kernel knows about one code cell. */
export interface CellState {
  id: string;
  execution_count: number | null;
  label: string;
  state: CellStateName;
  reason: string;
  prediction: Prediction;
  prediction_reason: string;
  duration: number;
  saved: number;
  reads: string[];
  writes: string[];
  depends_on: Dependency[];
  /** A restored cell's origin; null otherwise (or from a kernel that does not say). */
  origin: Origin | null;
  // panel (additive): incrcell's own magics ('only': nothing else; 'magic': with code), run time
  own: 'only' | 'magic' | null;
  run_seconds: number;
}

/** The team cache, while one is configured (PROTOCOL.md, `remote`). */
export interface RemoteStatus {
  url: string;
  mode: string;
  available: boolean;
  error: string | null;
  fetched: number;
  refused: number;
  uploaded: number;
  pending: number;
  dropped: number;
}

export interface Totals {
  restored: number;
  ran: number;
  uncacheable: number;
  error: number;
  saved: number;
  cache_bytes: number;
  cache_cap: number;
  cache_entries: number;
  /** panel (additive): uncacheable only because of incrcell's own magics (not the user's) */
  own: number;
}

export const EMPTY_TOTALS: Readonly<Totals> = Object.freeze({
  restored: 0,
  ran: 0,
  uncacheable: 0,
  error: 0,
  saved: 0,
  cache_bytes: 0,
  cache_cap: 0,
  cache_entries: 0,
  own: 0
});

export interface HelloMessage {
  type: 'hello';
  version: string;
}

export interface RunningMessage {
  type: 'running';
  id: string;
}

export interface ErrorMessage {
  type: 'error';
  message: string;
}

export interface StateMessage {
  type: 'state';
  enabled: boolean;
  cells: CellState[];
  totals: Totals;
  stale: string[];
  remote: RemoteStatus | null;
}

/** The answer to a message that changed nothing worth a `state` (a `check_files`): only its `ack`. */
export interface AckMessage {
  type: 'ack';
}

export type KernelMessage =
  | HelloMessage
  | RunningMessage
  | ErrorMessage
  | StateMessage
  | VariablesMessage
  | CacheMessage
  | AckMessage;

/** A code cell as the frontend sends it: JupyterLab's cell id and source. */
export interface CellSource {
  id: string;
  source: string;
}

/**
 * Every frontend message has the protocol number; one that must reach the
 * kernel also names its sender (one per comm link, random) and a sequence
 * number: the kernel acknowledges it (`ack` in its answer) and applies a
 * repeat of it only once.
 */
type Envelope<T> = T & { protocol: typeof PROTOCOL_VERSION; sender?: string; seq?: number };

export type FrontendMessage = Envelope<
  | { type: 'cells'; cells: CellSource[] }
  | { type: 'request_state' }
  | { type: 'invalidate'; id: string }
  | { type: 'clear' }
  | { type: 'enable'; enabled: boolean }
  | { type: 'check_files' } // panel: answered with a state only if a watched file changed
  | { type: 'request_variables' }
  | { type: 'request_cache' }
  | { type: 'evict'; key: string }
>;

type FrontendOf<T extends FrontendMessage['type']> = Extract<FrontendMessage, { type: T }>;

export function cellsMessage(cells: readonly CellSource[]): FrontendOf<'cells'> {
  return {
    type: 'cells',
    protocol: PROTOCOL_VERSION,
    cells: cells.map(c => ({ id: c.id, source: c.source }))
  };
}

export function invalidateMessage(id: string): FrontendOf<'invalidate'> {
  return { type: 'invalidate', protocol: PROTOCOL_VERSION, id };
}

export function clearMessage(): FrontendOf<'clear'> {
  return { type: 'clear', protocol: PROTOCOL_VERSION };
}

export function checkFilesMessage(): FrontendOf<'check_files'> {
  return { type: 'check_files', protocol: PROTOCOL_VERSION };
}

export function enableMessage(enabled: boolean): FrontendOf<'enable'> {
  return { type: 'enable', protocol: PROTOCOL_VERSION, enabled };
}

/** What `clear` removed from the cache (PROTOCOL.md, `cleared`). */
export interface Cleared {
  entries: number;
  bytes: number;
}

/** The kernel's acknowledgement of a message with a `seq`, and what its answer added. */
export interface Ack {
  seq: number;
  /** The error the message caused, or null if the kernel applied it. */
  error: string | null;
  /** For a `clear`: what it removed. */
  cleared: Cleared | null;
}

/** The acknowledgement an answer from the kernel carries, if any (any protocol-1 state or error). */
export function parseAck(data: unknown): Ack | null {
  if (!isObject(data) || data.protocol !== PROTOCOL_VERSION) {
    return null;
  }
  const seq = data.ack;
  if (typeof seq !== 'number' || !Number.isInteger(seq)) {
    return null;
  }
  const cleared = isObject(data.cleared)
    ? { entries: num(data.cleared.entries), bytes: num(data.cleared.bytes) }
    : null;
  return { seq, error: data.type === 'error' ? str(data.message) : null, cleared };
}

/** A kernel message, or why it was not accepted. */
export type Parsed = { message: KernelMessage } | { ignored: string };

/**
 * Validate a message from the kernel.
 *
 * The envelope (protocol, type) and the fields a view cannot do without (ids,
 * states) are checked strictly; descriptive fields missing from an otherwise
 * valid message get neutral defaults, so a kernel that adds or omits detail
 * never breaks the panel.
 */
export function parseKernelMessage(data: unknown): Parsed {
  if (!isObject(data)) {
    return { ignored: 'not a JSON object' };
  }
  if (data.protocol !== PROTOCOL_VERSION) {
    return {
      ignored: `protocol ${JSON.stringify(data.protocol)}, expected ${PROTOCOL_VERSION}`
    };
  }
  try {
    switch (data.type) {
      case 'hello':
        return { message: { type: 'hello', version: str(data.version) } };
      case 'running':
        return { message: { type: 'running', id: requiredId(data.id) } };
      case 'error':
        return { message: { type: 'error', message: str(data.message) } };
      case 'state':
        return { message: parseState(data) };
      case 'ack':
        return { message: { type: 'ack' } };
      case 'variables':
      case 'cache':
        return { message: parseViewMessage(data) };
      default:
        return { ignored: `unknown message type ${JSON.stringify(data.type)}` };
    }
  } catch (error) {
    return { ignored: `invalid ${String(data.type)} message: ${(error as Error).message}` };
  }
}

function parseState(data: Record<string, unknown>): StateMessage {
  if (!Array.isArray(data.cells)) {
    throw new Error('cells is not a list');
  }
  const totals = isObject(data.totals) ? data.totals : {};
  return {
    type: 'state',
    enabled: data.enabled !== false,
    cells: data.cells.map(parseCellState),
    totals: {
      restored: num(totals.restored),
      ran: num(totals.ran),
      uncacheable: num(totals.uncacheable),
      error: num(totals.error),
      saved: num(totals.saved),
      cache_bytes: num(totals.cache_bytes),
      cache_cap: num(totals.cache_cap),
      cache_entries: num(totals.cache_entries),
      own: num(totals.own)
    },
    stale: Array.isArray(data.stale) ? data.stale.map(requiredId) : [],
    remote: isObject(data.remote) ? parseRemote(data.remote) : null
  };
}

function parseRemote(data: Record<string, unknown>): RemoteStatus {
  return {
    url: str(data.url),
    mode: str(data.mode),
    available: data.available !== false,
    error: typeof data.error === 'string' ? data.error : null,
    fetched: num(data.fetched),
    refused: num(data.refused),
    uploaded: num(data.uploaded),
    pending: num(data.pending),
    dropped: num(data.dropped)
  };
}

function parseCellState(data: unknown): CellState {
  if (!isObject(data)) {
    throw new Error('a cell is not an object');
  }
  const state = data.state as CellStateName;
  if (!CELL_STATES.includes(state)) {
    throw new Error(`unknown cell state ${JSON.stringify(data.state)}`);
  }
  const prediction = PREDICTIONS.includes(data.prediction as Prediction)
    ? (data.prediction as Prediction)
    : 'unknown';
  const count = data.execution_count;
  return {
    id: requiredId(data.id),
    execution_count: typeof count === 'number' ? count : null,
    label: str(data.label),
    state,
    reason: str(data.reason),
    prediction,
    prediction_reason: str(data.prediction_reason),
    duration: num(data.duration),
    saved: num(data.saved),
    reads: strings(data.reads),
    writes: strings(data.writes),
    depends_on: Array.isArray(data.depends_on)
      ? data.depends_on.filter(isObject).map(d => ({
          id: requiredId(d.id),
          names: strings(d.names)
        }))
      : [],
    origin: ORIGINS.includes(data.origin as Origin) ? (data.origin as Origin) : null,
    own: data.own === 'only' || data.own === 'magic' ? data.own : null,
    run_seconds: num(data.run_seconds)
  };
}

// -- The Variables and Cache views (PROTOCOL.md, "Views"): answers to requests, never pushed --

/** One name in the kernel's namespace, as the Variables view shows it. */
export interface VariableInfo {
  name: string;
  type: string;
  /** A shape or a length; '' if none. */
  summary: string;
  /** Bytes the object holds; null if the kernel could not tell. */
  size: number | null;
}

export interface VariablesMessage {
  type: 'variables';
  /** The kernel was running a cell: ask again after the next state. */
  busy: boolean;
  variables: VariableInfo[];
}

/** One of this notebook's entries in the local cache, as the Cache view shows it. */
export interface CacheEntryInfo {
  key: string;
  /** The notebook cells it is an entry of (several cells with the same code share one). */
  cells: string[];
  bytes: number;
  /** Seconds since the epoch. */
  created: number;
  used: number;
  /** Where it came from in this session. */
  origin: Origin;
  /** Whether the team cache has it too. */
  in_remote: boolean;
}

export interface CacheMessage {
  type: 'cache';
  busy: boolean;
  entries: CacheEntryInfo[];
}

export function requestVariablesMessage(): FrontendOf<'request_variables'> {
  return { type: 'request_variables', protocol: PROTOCOL_VERSION };
}

export function requestCacheMessage(): FrontendOf<'request_cache'> {
  return { type: 'request_cache', protocol: PROTOCOL_VERSION };
}

export function evictMessage(key: string): FrontendOf<'evict'> {
  return { type: 'evict', protocol: PROTOCOL_VERSION, key };
}

function parseViewMessage(data: Record<string, unknown>): VariablesMessage | CacheMessage {
  const busy = data.busy === true;
  if (data.type === 'variables') {
    const list = Array.isArray(data.variables) ? data.variables.filter(isObject) : [];
    return {
      type: 'variables',
      busy,
      variables: list.map(v => ({
        name: requiredId(v.name),
        type: str(v.type),
        summary: str(v.summary),
        size: typeof v.size === 'number' && Number.isFinite(v.size) ? v.size : null
      }))
    };
  }
  const list = Array.isArray(data.entries) ? data.entries.filter(isObject) : [];
  return {
    type: 'cache',
    busy,
    entries: list.map(e => ({
      key: requiredId(e.key),
      cells: strings(e.cells),
      bytes: num(e.bytes),
      created: num(e.created),
      used: num(e.used),
      origin: e.origin === 'remote' ? 'remote' : 'local',
      in_remote: e.in_remote === true
    }))
  };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function requiredId(value: unknown): string {
  if (typeof value !== 'string' || value === '') {
    throw new Error(`cell id ${JSON.stringify(value)} is not a non-empty string`);
  }
  return value;
}

function str(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

function num(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) ? value : 0;
}

function strings(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];
}
