/**
 * The incrcell JupyterLab extension: a sidebar with every code cell's cache
 * state, the dependency graph and actions, plus a badge on each cell.
 *
 * One NotebookController per open notebook panel keeps that notebook's model
 * and comm; the sidebar follows the tracker's current notebook.
 */

import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, ISessionContextDialogs } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';

import { registerCommands } from './commands';
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
  optional: [ICommandPalette, ILayoutRestorer, ISessionContextDialogs],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    dialogs: ISessionContextDialogs | null
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
  }
};

export default plugin;
