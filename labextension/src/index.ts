/**
 * The incrcell JupyterLab extension: a sidebar with every code cell's cache
 * state, the dependency graph, the variables and the cache, and actions,
 * plus a badge on each cell.
 *
 * One NotebookController per open notebook panel keeps that notebook's model
 * and comm; the sidebar follows the tracker's current notebook, and its
 * selection follows the notebook's active cell.
 *
 * JupyterLab shows the sidebar's icon in its right tab bar.  Other shells
 * (Notebook 7: its side panels have no tab bar, only View → Right Sidebar)
 * get the icon in each notebook's toolbar, where it opens and closes the panel.
 */

import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, ISessionContextDialogs, ToolbarButton } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';

import { CommandIDs, registerCommands } from './commands';
import { NotebookController } from './controller';
import { Sidebar } from './sidebar';
import iconSvg from '../style/icon.svg';

const SIDEBAR_ID = 'incrcell-sidebar';

const icon = new LabIcon({ name: 'incrcell:icon', svgstr: iconSvg });

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'incrcell:plugin',
  description: "incrcell's sidebar: every cell's cache state, the dependency graph, and actions.",
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette, ILayoutRestorer, ISessionContextDialogs, ILabShell],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    dialogs: ISessionContextDialogs | null,
    labShell: ILabShell | null
  ) => {
    const controllers = new Map<NotebookPanel, NotebookController>();
    // The tracker may announce a notebook as current before it announces it as added.
    const current = () => {
      const panel = tracker.currentWidget;
      return panel && !panel.isDisposed ? track(panel) : null;
    };

    const sidebar = new Sidebar(app.commands);
    sidebar.id = SIDEBAR_ID;
    sidebar.title.icon = icon;
    app.shell.add(sidebar, 'right', { rank: 650 });
    restorer?.add(sidebar, SIDEBAR_ID);

    function track(panel: NotebookPanel): NotebookController {
      let controller = controllers.get(panel);
      if (!controller) {
        const created = new NotebookController(panel, dialogs);
        controllers.set(panel, created);
        const select = () => {
          const cell = panel.content.activeCell;
          created.model.select(cell?.model.type === 'code' ? cell.model.id : null);
        };
        panel.content.activeCellChanged.connect(select);
        select();
        if (!labShell) {
          panel.toolbar.insertItem(10, 'incrcell', toolbarButton());
        }
        panel.disposed.connect(() => {
          controllers.delete(panel);
          created.dispose();
          sidebar.setController(current());
        });
        controller = created;
      }
      return controller;
    }
    tracker.forEach(track);
    tracker.widgetAdded.connect((_, panel) => track(panel));
    tracker.currentChanged.connect(() => sidebar.setController(current()));
    sidebar.setController(current());

    registerCommands(app, current, SIDEBAR_ID, palette);

    /** Open the panel, or close it if open (shells with collapsible side panels). */
    function toolbarButton(): ToolbarButton {
      const shell = app.shell as { collapseRight?: () => void };
      return new ToolbarButton({
        icon,
        className: 'jp-incrcell-toolbar-button',
        tooltip: 'incrcell: the cache state of the cells (open or close the panel)',
        onClick: () => {
          if (sidebar.isVisible && shell.collapseRight) {
            shell.collapseRight();
          } else {
            void app.commands.execute(CommandIDs.showSidebar);
          }
        }
      });
    }
  }
};

export default plugin;
