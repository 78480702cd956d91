// Unit tests of the pure modules (protocol, model, format, layout, debounce):
// plain Node, TypeScript compiled to CommonJS by ts-jest.
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }]
  }
};
