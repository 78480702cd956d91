/**
 * The frontend end of the `incrcell` comm for one notebook: which kernel,
 * which comm, and what happens on kernel changes and restarts.
 *
 * Two ways a comm comes to exist (PROTOCOL.md): the frontend opens one on
 * every new or restarted kernel (the kernel closes it again when incrcell is
 * not loaded there), and `%load_ext incrcell` makes the kernel open one
 * towards the frontend.  Either way the newest comm is the one used, and the
 * kernel's `hello` on it is answered with the notebook's cells (the kernel
 * predicts from those; the open message carries them too, but only a comm
 * the kernel accepted can be sure they arrived).
 *
 * Every message goes to the kernel's main shell, never over a subshell.
 * JupyterLab 4.6 sends comm messages over a subshell per comm target, shared
 * by the panel's comm and the kernel's, and deletes it when a comm using it
 * closes; ipykernel 7.4 sends each comm message to the subshell that carried
 * the message the kernel last answered on that comm, so once that subshell is
 * gone every later message is dropped (`Unknown subshell_id`) without a word.
 * Sent to the main shell, the kernel's answers are parented there too, so no
 * subshell is ever in that route.  The main shell also runs the kernel's
 * handlers between cells, where the kernel side expects them.
 *
 * And every message that matters carries a sequence number the kernel
 * acknowledges: until it does, the message is kept, sent again on each new
 * comm (a restart, a kernel change, `%load_ext`) and, if the kernel has been
 * idle a while without acknowledging it, again on the same comm; the panel
 * says so while it waits.  The kernel applies a repeat only once.
 */

import type { ISessionContext } from '@jupyterlab/apputils';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import type { JSONObject } from '@lumino/coreutils';
import { PromiseDelegate, UUID } from '@lumino/coreutils';
import type { IDisposable } from '@lumino/disposable';

import type { CacheModel } from './model';
import {
  Ack,
  CellSource,
  COMM_TARGET,
  cellsMessage,
  FrontendMessage,
  parseAck,
  parseKernelMessage
} from './protocol';

/** How long the kernel may stay idle without acknowledging a message before it is sent again. */
export const RETRY_MS = 3000;
/** How often unacknowledged messages are looked at. */
const WATCH_MS = 1000;
/** Messages of which only the newest matters: a newer one replaces one still unacknowledged. */
const LATEST_ONLY = new Set<FrontendMessage['type']>([
  'cells',
  'enable',
  'check_files',
  'request_variables',
  'request_cache'
]);

/** What the panel says a message is, while the kernel has not acknowledged it. */
const WHAT: Record<FrontendMessage['type'], string> = {
  cells: "the notebook's cells",
  request_state: 'a state request',
  invalidate: 'invalidate a cell',
  clear: 'clear the cache',
  enable: 'the caching switch',
  check_files: 'a check of the files cells read',
  request_variables: 'a variables request',
  request_cache: 'a cache request',
  evict: 'evict a cache entry'
};

/** A message that must reach the kernel, until the kernel acknowledges it. */
interface Outgoing {
  seq: number;
  message: FrontendMessage;
  /** Date.now() of the last time it was sent; 0 if never. */
  sent: number;
  tries: number;
  answer: PromiseDelegate<Ack>;
}

export class KernelLink implements IDisposable {
  /**
   * @param currentCells - the notebook's code cells now, sent on every new comm.
   */
  constructor(
    private readonly _session: ISessionContext,
    private readonly _model: CacheModel,
    private readonly _currentCells: () => readonly CellSource[]
  ) {
    _session.kernelChanged.connect(this._onKernelChanged, this);
    // `ready` and `kernelChanged` can both announce the same kernel: _attach ignores repeats.
    void _session.ready.then(() => this._attach(this._sessionKernel()));
    this._attach(this._sessionKernel());
    this._watch = setInterval(() => this._retryOverdue(), WATCH_MS);
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /**
   * Send a message until the kernel acknowledges it: now if a comm is open,
   * else on the next one.  Resolves with the kernel's acknowledgement (an
   * error if the kernel refused the message); a `cells` or `enable` replaced
   * by a newer one resolves with the newer one's.  Never rejects: a link
   * disposed first (the notebook closed) resolves with an error.
   */
  send(message: FrontendMessage): Promise<Ack> {
    const outgoing: Outgoing = {
      seq: ++this._seq,
      message,
      sent: 0,
      tries: 0,
      answer: new PromiseDelegate<Ack>()
    };
    if (LATEST_ONLY.has(message.type)) {
      for (const older of [...this._outgoing.values()].filter(
        o => o.message.type === message.type
      )) {
        this._outgoing.delete(older.seq);
        void outgoing.answer.promise.then(ack => older.answer.resolve(ack));
      }
    }
    this._outgoing.set(outgoing.seq, outgoing);
    this._transmit(outgoing);
    return outgoing.answer.promise;
  }

  /** Take over a comm the kernel opened (`%load_ext incrcell` ran). */
  adopt(comm: Kernel.IComm): void {
    this._use(comm);
    if (this._model.connection !== 'ready') {
      this._model.setConnection('connecting');
    }
  }

  /** Open a comm of our own on the current kernel (the kernel has incrcell now), unless we have one. */
  reopen(): void {
    if (!this._comm) {
      void this._open();
    }
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    clearInterval(this._watch);
    this._detach();
    this._session.kernelChanged.disconnect(this._onKernelChanged, this);
    for (const outgoing of this._outgoing.values()) {
      outgoing.answer.resolve({
        seq: outgoing.seq,
        error: 'the notebook was closed',
        cleared: null
      });
    }
    this._outgoing.clear();
  }

  private _sessionKernel(): Kernel.IKernelConnection | null {
    return this._session.session?.kernel ?? null;
  }

  private _onKernelChanged(): void {
    this._attach(this._sessionKernel());
  }

  private _attach(kernel: Kernel.IKernelConnection | null): void {
    if (this._disposed || kernel === this._kernel) {
      return;
    }
    this._detach();
    this._kernel = kernel;
    if (!kernel) {
      this._model.setConnection('no-kernel');
      return;
    }
    this._model.setConnection('connecting'); // a new kernel knows nothing of the old one's cells
    targets.subscribe(kernel, this);
    kernel.statusChanged.connect(this._onStatus, this);
    this._idleSince = kernel.status === 'idle' ? Date.now() : Infinity;
    void this._open();
  }

  private _detach(): void {
    const kernel = this._kernel;
    if (kernel) {
      targets.unsubscribe(kernel, this);
      kernel.statusChanged.disconnect(this._onStatus, this);
    }
    const comm = this._comm;
    this._comm = null;
    this._accepted = false;
    if (comm) {
      this._close(comm);
    }
    this._kernel = null;
    this._restarting = false;
  }

  /** A restart drops every comm (the kernel is a new process): open a new one once it is idle. */
  private _onStatus(_: Kernel.IKernelConnection, status: Kernel.Status): void {
    if (status !== 'idle') {
      this._idleSince = Infinity;
    } else if (this._idleSince === Infinity) {
      this._idleSince = Date.now();
    }
    if (status === 'restarting' || status === 'autorestarting') {
      this._restarting = true;
      this._comm = null;
      this._accepted = false;
      this._model.setConnection('connecting');
    } else if (status === 'idle' && this._restarting) {
      this._restarting = false;
      void this._open();
    } else if (status === 'dead') {
      this._comm = null;
      this._accepted = false;
      this._model.setConnection('no-kernel');
    }
  }

  private async _open(): Promise<void> {
    const kernel = this._kernel;
    if (!kernel || kernel.isDisposed) {
      return;
    }
    if (this._model.connection !== 'ready') {
      this._model.setConnection('connecting');
    }
    let info: KernelMessage.IInfoReply;
    try {
      info = await kernel.info;
    } catch {
      return; // the kernel went away; kernelChanged or statusChanged follows
    }
    // Another kernel, or a comm the kernel opened, may have arrived meanwhile.
    if (kernel !== this._kernel || kernel.isDisposed || this._comm) {
      return;
    }
    if (info.language_info?.name !== 'python') {
      this._model.setConnection('unsupported');
      return;
    }
    const comm = kernel.createComm(COMM_TARGET);
    this._use(comm);
    comm.open(json(cellsMessage(this._currentCells())));
  }

  private _use(comm: Kernel.IComm): void {
    const previous = this._comm;
    this._comm = comm;
    this._accepted = false;
    comm.onMsg = msg => {
      const data = msg.content.data;
      this._acknowledged(parseAck(data)); // an answer on a comm since replaced still counts
      if (comm === this._comm) {
        this._receive(data);
      }
    };
    comm.onClose = () => {
      if (comm === this._comm) {
        this._comm = null;
        this._accepted = false;
        this._model.setConnection('unavailable');
      }
    };
    if (previous && previous !== comm) {
      this._close(previous);
    }
  }

  private _receive(data: unknown): void {
    const parsed = parseKernelMessage(data);
    if ('ignored' in parsed) {
      console.warn(`incrcell: ignoring a kernel message (${parsed.ignored})`, data);
      return;
    }
    this._model.apply(parsed.message);
    if (parsed.message.type === 'hello') {
      // the kernel has this comm: the cells first, then whatever is still unacknowledged
      this._accepted = true;
      void this.send(cellsMessage(this._currentCells()));
      for (const outgoing of this._outgoing.values()) {
        if (outgoing.message.type !== 'cells') {
          this._transmit(outgoing);
        }
      }
    }
  }

  /** Send a message on the current comm, once the kernel has accepted it. */
  private _transmit(outgoing: Outgoing): void {
    const comm = this._comm;
    const kernel = this._kernel;
    if (!comm || comm.isDisposed || !kernel || kernel.isDisposed || !this._accepted) {
      return; // sent when the next comm says hello
    }
    outgoing.sent = Date.now();
    outgoing.tries += 1;
    const data = { ...outgoing.message, sender: this._sender, seq: outgoing.seq };
    toMainShell(kernel, 'comm_msg', { comm_id: comm.commId, data: json(data) });
  }

  private _acknowledged(ack: Ack | null): void {
    const outgoing = ack && this._outgoing.get(ack.seq);
    if (!ack || !outgoing) {
      return;
    }
    this._outgoing.delete(ack.seq);
    outgoing.answer.resolve(ack);
    if (this._waiting && ![...this._outgoing.values()].some(o => o.tries > 1)) {
      this._waiting = false;
      this._model.setError(null);
    }
  }

  /**
   * Send again what the kernel has not acknowledged although it has been idle
   * for a while since (a message lost on the way); say so in the panel.
   */
  private _retryOverdue(): void {
    const now = Date.now();
    if (!this._accepted || now - this._idleSince < RETRY_MS) {
      return; // no comm to send on, or the kernel is busy (a message waits for the cell)
    }
    for (const outgoing of this._outgoing.values()) {
      if (outgoing.sent && now - outgoing.sent >= RETRY_MS) {
        console.warn(`incrcell: the kernel has not acknowledged message ${outgoing.seq}; again`);
        this._transmit(outgoing);
        this._waiting = true;
        this._model.setError(
          `the kernel has not answered (${WHAT[outgoing.message.type]}): sent it again`
        );
      }
    }
  }

  /** Close a comm: tell the kernel (on its main shell), then forget it here. */
  private _close(comm: Kernel.IComm): void {
    const kernel = this._kernel;
    if (comm.isDisposed) {
      return;
    }
    if (kernel && !kernel.isDisposed && kernel.status !== 'dead') {
      toMainShell(kernel, 'comm_close', { comm_id: comm.commId, data: {} });
    }
    comm.dispose();
  }

  private _kernel: Kernel.IKernelConnection | null = null;
  private _comm: Kernel.IComm | null = null;
  /** The kernel said hello on the current comm: it handles what is sent on it. */
  private _accepted = false;
  private _restarting = false;
  private _disposed = false;
  private readonly _sender = UUID.uuid4();
  private _seq = 0;
  private readonly _outgoing = new Map<number, Outgoing>();
  /** Date.now() since the kernel is idle; Infinity while it is not. */
  private _idleSince = Infinity;
  /** The panel says a message was sent again. */
  private _waiting = false;
  private readonly _watch: ReturnType<typeof setInterval>;
}

/** Protocol messages are JSON objects; TypeScript interfaces just lack the index signature. */
function json(message: FrontendMessage): JSONObject {
  return message as unknown as JSONObject;
}

/**
 * Send a comm message to the kernel's main shell, whatever subshell
 * JupyterLab assigned to the comm (see the module's comment).
 */
function toMainShell(
  kernel: Kernel.IKernelConnection,
  msgType: 'comm_msg' | 'comm_close',
  content: { comm_id: string; data: JSONObject }
): void {
  const options = {
    channel: 'shell' as const,
    username: kernel.username,
    session: kernel.clientId,
    content
  };
  const msg =
    msgType === 'comm_msg'
      ? KernelMessage.createMessage<KernelMessage.ICommMsgMsg<'shell'>>({ ...options, msgType })
      : KernelMessage.createMessage<KernelMessage.ICommCloseMsg<'shell'>>({ ...options, msgType });
  kernel.sendShellMessage(msg, false, true);
}

/**
 * The comm target on each kernel connection.  A kernel connection has one
 * handler per target name, and two views of one notebook share a kernel
 * connection, so one handler serves all the links on it: the first adopts the
 * kernel's comm, the others open their own.
 */
class CommTargets {
  subscribe(kernel: Kernel.IKernelConnection, link: KernelLink): void {
    let entry = this._entries.get(kernel);
    if (!entry) {
      const links = new Set<KernelLink>();
      const handler = (comm: Kernel.IComm) => {
        const [first, ...others] = links;
        if (!first) {
          toMainShell(kernel, 'comm_close', { comm_id: comm.commId, data: {} });
          comm.dispose();
          return;
        }
        first.adopt(comm);
        others.forEach(other => other.reopen());
      };
      kernel.registerCommTarget(COMM_TARGET, handler);
      entry = { links, handler };
      this._entries.set(kernel, entry);
    }
    entry.links.add(link);
  }

  unsubscribe(kernel: Kernel.IKernelConnection, link: KernelLink): void {
    const entry = this._entries.get(kernel);
    if (!entry) {
      return;
    }
    entry.links.delete(link);
    if (entry.links.size === 0) {
      this._entries.delete(kernel);
      if (!kernel.isDisposed) {
        kernel.removeCommTarget(COMM_TARGET, entry.handler);
      }
    }
  }

  private _entries = new WeakMap<
    Kernel.IKernelConnection,
    { links: Set<KernelLink>; handler: (comm: Kernel.IComm) => void }
  >();
}

const targets = new CommTargets();
