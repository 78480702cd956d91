/**
 * incrcell's commands: the sidebar's buttons, the command palette and the
 * cell context menu all go through these, on the current notebook.
 */

import type { JupyterFrontEnd } from '@jupyterlab/application';
import type { ICommandPalette } from '@jupyterlab/apputils';
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import type { ReadonlyPartialJSONObject } from '@lumino/coreutils';

import type { NotebookController } from './controller';
import { formatBytes } from './format';

export namespace CommandIDs {
  export const showSidebar = 'incrcell:show-sidebar';
  export const runStale = 'incrcell:run-stale';
  export const clear = 'incrcell:clear';
  export const toggleEnabled = 'incrcell:toggle-enabled';
  export const invalidate = 'incrcell:invalidate';
  export const revealCell = 'incrcell:reveal-cell';
  export const runWithDependents = 'incrcell:run-with-dependents'; // panel
}

const CATEGORY = 'incrcell';

export function registerCommands(
  app: JupyterFrontEnd,
  current: () => NotebookController | null,
  sidebarId: string,
  palette: ICommandPalette | null
): void {
  const { commands, shell } = app;
  const ready = () => current()?.ready ?? false;
  /** The cell a command acts on: `args.id`, else the active cell of the current notebook. */
  const cellId = (args: ReadonlyPartialJSONObject): string | null =>
    typeof args.id === 'string' ? args.id : (current()?.panel.content.activeCell?.model.id ?? null);

  commands.addCommand(CommandIDs.showSidebar, {
    label: 'Show incrcell Sidebar',
    execute: () => shell.activateById(sidebarId)
  });
  commands.addCommand(CommandIDs.runStale, {
    label: 'Run Stale Cells (incrcell)',
    caption: 'Run exactly the cells an edit made stale, in notebook order',
    isEnabled: () => ready() && current()!.model.stale.length > 0,
    execute: () => current()?.runStale()
  });
  commands.addCommand(CommandIDs.clear, {
    label: "Clear This Notebook's incrcell Cache",
    caption: "Delete the cache entries of this notebook's cells",
    isEnabled: ready,
    execute: () => {
      const controller = current();
      return controller ? clearAfterAsking(controller) : undefined;
    }
  });
  commands.addCommand(CommandIDs.toggleEnabled, {
    label: 'Cache Cells with incrcell',
    caption: 'Turn incrcell caching on or off in this kernel',
    isEnabled: ready,
    isToggled: () => ready() && current()!.model.enabled,
    execute: args => {
      const controller = current();
      if (controller) {
        controller.setEnabled(
          typeof args.enabled === 'boolean' ? args.enabled : !controller.model.enabled
        );
      }
    }
  });
  commands.addCommand(CommandIDs.invalidate, {
    label: "Invalidate Cell's incrcell Cache Entry",
    caption: 'Forget the cached result of the cell: it runs next time',
    isEnabled: args => ready() && cellId(args) !== null,
    execute: args => {
      const id = cellId(args);
      if (id) {
        current()?.invalidate(id);
      }
    }
  });
  commands.addCommand(CommandIDs.runWithDependents, {
    label: 'Run Cell and Its Dependents (incrcell)',
    caption: 'Run the cell and every cell that reads from it, for real, in order',
    isEnabled: args => ready() && cellId(args) !== null,
    execute: args => {
      const id = cellId(args);
      return id ? current()?.runWithDependents(id) : undefined;
    }
  });
  commands.addCommand(CommandIDs.revealCell, {
    label: 'Go to Cell',
    execute: async args => {
      const controller = current();
      const id = cellId(args);
      if (controller && id) {
        shell.activateById(controller.panel.id);
        await controller.reveal(id);
      }
    }
  });

  for (const command of [
    CommandIDs.showSidebar,
    CommandIDs.runStale,
    CommandIDs.clear,
    CommandIDs.toggleEnabled,
    CommandIDs.invalidate,
    CommandIDs.runWithDependents
  ]) {
    palette?.addItem({ command, category: CATEGORY });
  }
  app.contextMenu.addItem({
    command: CommandIDs.runWithDependents,
    selector: '.jp-Notebook .jp-CodeCell',
    rank: 101
  });
  app.contextMenu.addItem({
    command: CommandIDs.invalidate,
    selector: '.jp-Notebook .jp-CodeCell',
    rank: 100
  });
}

/**
 * Clear the notebook's cache entries once the user agreed, then say what was
 * removed (as the kernel counted it) or why nothing was.
 */
async function clearAfterAsking(controller: NotebookController): Promise<void> {
  const entries = controller.model.totals.cache_entries;
  const answer = await showDialog({
    title: "Clear this notebook's incrcell cache?",
    body:
      `Deletes the cache entries of this notebook's cells (${entries} now): ` +
      'they run again at the next Run All. What they did in this kernel stays.',
    buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Clear' })]
  });
  if (!answer.button.accept) {
    return;
  }
  const ack = await controller.clear();
  if (ack.error !== null) {
    Notification.error(`incrcell could not clear the cache: ${ack.error}`, { autoClose: false });
    return;
  }
  const removed = ack.cleared?.entries ?? 0;
  Notification.success(
    `incrcell removed ${removed} cache ${removed === 1 ? 'entry' : 'entries'} ` +
      `(${formatBytes(ack.cleared?.bytes ?? 0)})`,
    { autoClose: 5000 }
  );
}
