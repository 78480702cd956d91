// ESLint as in JupyterLab's extension template (github.com/jupyterlab/extension-template),
// with prettier for formatting. `npm run lint:check` runs it (the Python suite too:
// tests/test_style.py); `npm run lint` fixes what it can.
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';
import prettierRecommended from 'eslint-plugin-prettier/recommended';
import globals from 'globals';
import jupyterPlugin from '@jupyter/eslint-plugin';

export default defineConfig([
  {
    ignores: ['node_modules', 'lib', 'coverage', '**/*.js', '**/*.d.ts']
  },
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    plugins: {
      jupyter: jupyterPlugin
    }
  },
  jupyterPlugin.configs.recommended,
  {
    files: ['**/*.ts', '**/*.tsx'],
    languageOptions: {
      globals: {
        ...globals.browser,
        ...globals.es2015,
        ...globals.node
      },
      parserOptions: {
        // the unit tests are compiled with their own configuration (jest types)
        project: ['tsconfig.json', 'tsconfig.test.json'],
        sourceType: 'module'
      }
    },
    rules: {
      '@typescript-eslint/no-unused-vars': ['warn', { args: 'none' }],
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-namespace': 'off',
      '@typescript-eslint/no-use-before-define': 'off',
      curly: ['error', 'all'],
      eqeqeq: 'error',
      'prefer-arrow-callback': 'error',
      // The sidebar is English only: it asks for no translator (ITranslator) yet.
      'jupyter/no-untranslated-string': 'off',
      // Its commands take no documented arguments (describedBy documents arguments).
      'jupyter/command-described-by': 'off',
      // The sidebar and its controllers are built in activate(): nothing to defer.
      'jupyter/prefer-lazy-imports': 'off'
    }
  },
  prettierRecommended
]);
