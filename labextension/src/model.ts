/**
 * What the sidebar knows about one notebook: its code cells (from the
 * notebook), the kernel's view of them (from the comm), the selection.
 *
 * Pure state with change notifications: no JupyterLab imports and no DOM, so
 * the unit tests drive it with protocol fixtures.  The views listen to
 * `changed` and redraw only what the change kind says changed.
 */

import { ISignal, Signal } from '@lumino/signaling';

import {
  CacheMessage,
  CellSource,
  CellState,
  EMPTY_TOTALS,
  KernelMessage,
  StateMessage,
  RemoteStatus,
  Totals,
  VariablesMessage
} from './protocol';

/**
 * Where the conversation with the notebook's kernel stands.
 * - `no-kernel`: the notebook has no running kernel;
 * - `connecting`: a comm was opened, the kernel has not answered yet;
 * - `unavailable`: the kernel closed the comm: incrcell is not loaded there;
 * - `unsupported`: not a Python kernel;
 * - `ready`: the kernel answers.
 */
export type Connection = 'no-kernel' | 'connecting' | 'unavailable' | 'unsupported' | 'ready';

/** What changed, so that views redraw only that. */
export type Change = 'cells' | 'states' | 'running' | 'connection' | 'selection' | 'error';

/** An edge of the dependency graph: `to` reads `names` written by `from`. */
export interface Edge {
  from: string;
  to: string;
  names: string[];
}

export class CacheModel {
  get changed(): ISignal<this, Change> {
    return this._changed;
  }

  /** The kernel's answers to the Variables and Cache views' requests (variables.ts, cacheview.ts). */
  get viewData(): ISignal<this, VariablesMessage | CacheMessage> {
    return this._viewData;
  }

  get connection(): Connection {
    return this._connection;
  }

  /** incrcell's version in the kernel, from its hello. */
  get kernelVersion(): string | null {
    return this._version;
  }

  /** Whether caching is on in the kernel (`%incrcell on/off`). */
  get enabled(): boolean {
    return this._enabled;
  }

  get totals(): Readonly<Totals> {
    return this._totals;
  }

  /** The team cache, if the kernel has one configured. */
  get remote(): Readonly<RemoteStatus> | null {
    return this._remote;
  }

  /** The last error the kernel reported, until dismissed or the next state. */
  get error(): string | null {
    return this._error;
  }

  /** The cell executing now, if the kernel said so. */
  get running(): string | null {
    return this._running;
  }

  get selected(): string | null {
    return this._selected;
  }

  /** The notebook's code cells, in notebook order. */
  get cells(): readonly CellSource[] {
    return this._cells;
  }

  /**
   * Replace the notebook's code cells; returns whether any id, source or the
   * order changed (only then is a `cells` message worth sending).
   */
  setCells(cells: readonly CellSource[]): boolean {
    const same =
      cells.length === this._cells.length &&
      cells.every((c, i) => c.id === this._cells[i].id && c.source === this._cells[i].source);
    if (same) {
      return false;
    }
    this._cells = cells.map(c => ({ id: c.id, source: c.source }));
    this._index = new Map(this._cells.map((c, i) => [c.id, i]));
    this._changed.emit('cells');
    return true;
  }

  /** The position of a cell among the code cells, or -1. */
  indexOf(id: string): number {
    return this._index.get(id) ?? -1;
  }

  /** What the kernel last said about a cell. */
  state(id: string): CellState | undefined {
    return this._states.get(id);
  }

  /** The cells 'Run stale cells' runs: the kernel's stale cells still in the notebook, in notebook order. */
  get stale(): string[] {
    return this._stale
      .filter(id => this._index.has(id))
      .sort((a, b) => this.indexOf(a) - this.indexOf(b));
  }

  /**
   * Every cell that reads, directly or transitively, from `id`: what an edit
   * of `id` would invalidate (not including `id` itself).
   */
  dependents(id: string): Set<string> {
    const found = new Set<string>();
    const queue = [id];
    while (queue.length) {
      for (const next of this._downstream.get(queue.pop()!) ?? []) {
        if (next !== id && !found.has(next)) {
          found.add(next);
          queue.push(next);
        }
      }
    }
    return found;
  }

  /**
   * The dependency edges between the notebook's current code cells, one per
   * pair of cells (names merged if the kernel lists an upstream cell twice).
   */
  edges(): Edge[] {
    const edges: Edge[] = [];
    for (const cell of this._cells) {
      const byUpstream = new Map<string, Edge>();
      for (const dep of this._states.get(cell.id)?.depends_on ?? []) {
        const edge = byUpstream.get(dep.id);
        if (edge) {
          edge.names = [...new Set([...edge.names, ...dep.names])];
        } else if (this._index.has(dep.id)) {
          const created = { from: dep.id, to: cell.id, names: dep.names };
          byUpstream.set(dep.id, created);
          edges.push(created);
        }
      }
    }
    return edges;
  }

  /**
   * Record where the kernel conversation stands.  Anything but `ready` means
   * the kernel's view is gone (a new kernel, a restart, no incrcell), so the
   * kernel-reported state is dropped with it.
   */
  setConnection(connection: Connection): void {
    if (connection === this._connection) {
      return;
    }
    this._connection = connection;
    if (connection !== 'ready') {
      this._clearKernelState();
    }
    this._changed.emit('connection');
  }

  /** Apply a validated message from the kernel. */
  apply(message: KernelMessage): void {
    this.setConnection('ready');
    switch (message.type) {
      case 'hello':
        this._version = message.version;
        this._changed.emit('connection');
        break;
      case 'running':
        this._running = message.id;
        this._changed.emit('running');
        break;
      case 'error':
        this._error = message.message;
        this._changed.emit('error');
        break;
      case 'state':
        this._applyState(message);
        break;
      case 'variables':
      case 'cache':
        this._viewData.emit(message);
        break;
    }
  }

  select(id: string | null): void {
    if (id !== this._selected) {
      this._selected = id;
      this._changed.emit('selection');
    }
  }

  /** Show a problem of the frontend's own (a message not answered) like a kernel error; null: it is over. */
  setError(message: string | null): void {
    if (message !== this._error) {
      this._error = message;
      this._changed.emit('error');
    }
  }

  dismissError(): void {
    if (this._error !== null) {
      this._error = null;
      this._changed.emit('error');
    }
  }

  dispose(): void {
    Signal.clearData(this);
  }

  private _applyState(message: StateMessage): void {
    const enabledChanged = message.enabled !== this._enabled;
    this._enabled = message.enabled;
    this._states = new Map(message.cells.map(c => [c.id, c]));
    this._totals = message.totals;
    this._remote = message.remote;
    this._stale = message.stale;
    this._downstream = downstreamOf(message.cells);
    const wasRunning = this._running !== null;
    this._running = null;
    if (enabledChanged) {
      this._changed.emit('connection');
    }
    if (wasRunning) {
      this._changed.emit('running');
    }
    this._changed.emit('states');
  }

  private _clearKernelState(): void {
    this._version = null;
    this._enabled = true;
    this._states = new Map();
    this._totals = EMPTY_TOTALS;
    this._remote = null;
    this._stale = [];
    this._downstream = new Map();
    this._running = null;
    this._error = null;
    this._changed.emit('states');
  }

  private _changed = new Signal<this, Change>(this);
  private _viewData = new Signal<this, VariablesMessage | CacheMessage>(this);
  private _connection: Connection = 'no-kernel';
  private _version: string | null = null;
  private _enabled = true;
  private _cells: CellSource[] = [];
  private _index = new Map<string, number>();
  private _states = new Map<string, CellState>();
  private _totals: Readonly<Totals> = EMPTY_TOTALS;
  private _remote: Readonly<RemoteStatus> | null = null;
  private _stale: string[] = [];
  private _downstream = new Map<string, string[]>();
  private _running: string | null = null;
  private _error: string | null = null;
  private _selected: string | null = null;
}

/** For each cell, the cells that read from it directly. */
function downstreamOf(cells: readonly CellState[]): Map<string, string[]> {
  const downstream = new Map<string, string[]>();
  for (const cell of cells) {
    for (const dep of cell.depends_on) {
      const list = downstream.get(dep.id);
      if (list) {
        list.push(cell.id);
      } else {
        downstream.set(dep.id, [cell.id]);
      }
    }
  }
  return downstream;
}
