// `npm run bundle`: console/src -> console/dist, the files sessiond embeds.
// The output depends only on the sources and the locked dependencies, so
// `.ci/run` can rebuild it and compare with what is committed.
import { build } from "esbuild";
import { copyFile, mkdir } from "node:fs/promises";

const here = new URL(".", import.meta.url);
const dist = new URL("dist/", here);
await mkdir(dist, { recursive: true });
await build({
  entryPoints: [new URL("src/main.ts", here).pathname],
  outfile: new URL("console.js", dist).pathname,
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  legalComments: "none",
  charset: "utf8",
  logLevel: "warning",
});
await build({
  entryPoints: [new URL("src/console.css", here).pathname],
  outfile: new URL("console.css", dist).pathname,
  minify: true,
  charset: "utf8",
  logLevel: "warning",
});
for (const file of ["index.html", "icon.svg"]) {
  await copyFile(new URL(`src/${file}`, here), new URL(file, dist));
}
