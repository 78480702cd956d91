// The extension builder loads .svg files imported from code as strings.
declare module '*.svg' {
  const svgstr: string;
  export default svgstr;
}
