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
 */

import type { ISessionContext } from '@jupyterlab/apputils';
import type { Kernel, KernelMessage } from '@jupyterlab/services';
import type { JSONObject } from '@lumino/coreutils';
import type { IDisposable } from '@lumino/disposable';

import type { CacheModel } from './model';
import {
  CellSource,
  COMM_TARGET,
  cellsMessage,
  FrontendMessage,
  parseKernelMessage
} from './protocol';

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
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Send a message on the current comm, if there is one. */
  send(message: FrontendMessage): void {
    const comm = this._comm;
    if (comm && !comm.isDisposed) {
      comm.send(json(message));
    }
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
    this._detach();
    this._session.kernelChanged.disconnect(this._onKernelChanged, this);
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
    if (comm && !comm.isDisposed && kernel && !kernel.isDisposed) {
      comm.close();
    }
    this._kernel = null;
    this._restarting = false;
  }

  /** A restart drops every comm (the kernel is a new process): open a new one once it is idle. */
  private _onStatus(_: Kernel.IKernelConnection, status: Kernel.Status): void {
    if (status === 'restarting' || status === 'autorestarting') {
      this._restarting = true;
      this._comm = null;
      this._model.setConnection('connecting');
    } else if (status === 'idle' && this._restarting) {
      this._restarting = false;
      void this._open();
    } else if (status === 'dead') {
      this._comm = null;
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
    comm.onMsg = msg => {
      if (comm === this._comm) {
        this._receive(msg.content.data);
      }
    };
    comm.onClose = () => {
      if (comm === this._comm) {
        this._comm = null;
        this._model.setConnection('unavailable');
      }
    };
    if (previous && !previous.isDisposed && !this._kernel?.isDisposed) {
      previous.close();
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
      this.send(cellsMessage(this._currentCells()));
    }
  }

  private _kernel: Kernel.IKernelConnection | null = null;
  private _comm: Kernel.IComm | null = null;
  private _restarting = false;
  private _disposed = false;
}

/** Protocol messages are JSON objects; TypeScript interfaces just lack the index signature. */
function json(message: FrontendMessage): JSONObject {
  return message as unknown as JSONObject;
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
          comm.close();
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
