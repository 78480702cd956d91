// KernelLink against a fake kernel connection: messages go to the main shell,
// carry a sequence number, and are sent again until the kernel acknowledges them.

import { Signal } from '@lumino/signaling';

import { KernelLink, RETRY_MS } from '../src/connection';
import { CacheModel } from '../src/model';
import { clearMessage, enableMessage } from '../src/protocol';
import { CELLS, stateMessage } from './fixtures';

jest.mock('@jupyterlab/services', () => ({
  KernelMessage: {
    createMessage: (options: Record<string, unknown>) => ({
      header: { msg_type: options.msgType, subshell_id: options.subshellId },
      channel: options.channel,
      content: options.content
    })
  }
}));

type Data = Record<string, unknown>;

class FakeComm {
  constructor(readonly commId: string) {}
  isDisposed = false;
  onMsg: (msg: { content: { data: Data } }) => void = () => undefined;
  onClose: () => void = () => undefined;
  open(): void {}
  dispose(): void {
    this.isDisposed = true;
  }
  /** The kernel says something on this comm. */
  receive(data: Data): void {
    this.onMsg({ content: { data: { protocol: 1, ...data } } });
  }
}

class FakeKernel {
  status = 'idle';
  isDisposed = false;
  username = 'user';
  clientId = 'client';
  info = Promise.resolve({ language_info: { name: 'python' } });
  statusChanged = new Signal<FakeKernel, string>(this);
  comms: FakeComm[] = [];
  /** The messages sent to the kernel's shell. */
  sent: { header: Data; content: { comm_id: string; data: Data } }[] = [];
  createComm(): FakeComm {
    const comm = new FakeComm(`comm-${this.comms.length}`);
    this.comms.push(comm);
    return comm;
  }
  registerCommTarget(): void {}
  removeCommTarget(): void {}
  sendShellMessage(msg: FakeKernel['sent'][number]): void {
    this.sent.push(msg);
  }
  setStatus(status: string): void {
    this.status = status;
    this.statusChanged.emit(status);
  }
  /** The data of the comm messages sent, newest last. */
  data(): Data[] {
    return this.sent.filter(m => m.header.msg_type === 'comm_msg').map(m => m.content.data);
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) {
    await Promise.resolve();
  }
}

async function connected(): Promise<{ kernel: FakeKernel; model: CacheModel; link: KernelLink }> {
  const kernel = new FakeKernel();
  const session = {
    kernelChanged: new Signal<unknown, unknown>({}),
    ready: Promise.resolve(),
    session: { kernel }
  };
  const model = new CacheModel();
  model.setCells(CELLS);
  const link = new KernelLink(session as never, model, () => CELLS);
  await settle();
  kernel.comms[0].receive({ type: 'hello', version: 'test' });
  kernel.comms[0].receive({ ...stateMessage(), ack: 1 }); // the cells sent on hello
  return { kernel, model, link };
}

beforeEach(() => jest.useFakeTimers());
afterEach(() => jest.useRealTimers());

describe('KernelLink', () => {
  it('sends to the main shell, with a sender and a sequence number', async () => {
    const { kernel, link } = await connected();
    const [cells] = kernel.data();
    expect(cells).toMatchObject({ type: 'cells', seq: 1 });
    expect(typeof cells.sender).toBe('string');
    expect(kernel.sent.every(m => m.header.subshell_id === undefined)).toBe(true);
    link.dispose();
  });

  it('sends again what the idle kernel did not acknowledge, and says so', async () => {
    const { kernel, model, link } = await connected();
    const answer = link.send(clearMessage());
    const seq = kernel.data()[1].seq;
    jest.advanceTimersByTime(RETRY_MS + 1000);
    expect(kernel.data().slice(1)).toEqual([
      expect.objectContaining({ type: 'clear', seq }),
      expect.objectContaining({ type: 'clear', seq })
    ]);
    expect(model.error).toContain('clear the cache');
    kernel.comms[0].receive({ ...stateMessage(), ack: seq, cleared: { entries: 3, bytes: 99 } });
    await expect(answer).resolves.toEqual({ seq, error: null, cleared: { entries: 3, bytes: 99 } });
    expect(model.error).toBeNull();
    link.dispose();
  });

  it('waits while the kernel is busy: a message queues behind the running cell', async () => {
    const { kernel, link } = await connected();
    kernel.setStatus('busy');
    void link.send(enableMessage(false));
    jest.advanceTimersByTime(10 * RETRY_MS);
    expect(kernel.data().filter(d => d.type === 'enable')).toHaveLength(1);
    link.dispose();
  });

  it('sends what is unacknowledged on the comm of the restarted kernel', async () => {
    const { kernel, link } = await connected();
    kernel.setStatus('restarting');
    const answer = link.send(enableMessage(false));
    expect(kernel.data().filter(d => d.type === 'enable')).toHaveLength(0);
    kernel.setStatus('idle');
    await settle();
    const comm = kernel.comms[1];
    comm.receive({ type: 'hello', version: 'test' });
    const last = kernel.sent[kernel.sent.length - 1];
    expect(last.content).toMatchObject({ comm_id: comm.commId, data: { type: 'enable' } });
    comm.receive({ ...stateMessage(), ack: last.content.data.seq });
    await expect(answer).resolves.toMatchObject({ error: null });
    link.dispose();
  });

  it('lets a newer switch replace one not yet acknowledged', async () => {
    const { kernel, link } = await connected();
    kernel.setStatus('busy');
    const first = link.send(enableMessage(false));
    void link.send(enableMessage(true));
    const seq = kernel.data()[2].seq;
    kernel.comms[0].receive({ ...stateMessage(), ack: seq });
    await expect(first).resolves.toMatchObject({ seq, error: null });
    link.dispose();
  });
});
