// Drives Debian's chromium to the dashboard's topology table and checks that a subscription's row shows its
// scheduled messages (published with a due time not reached yet) apart from its backlog, in the column under the
// "Scheduled" header.
//   node scheduled.mjs URL SUBSCRIPTION(topic/sub) BACKLOG SCHEDULED
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, subscription, backlog, scheduled] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "tidings-chromium-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const step = (s) => console.log(`browser: ${s}`);
const exactly = (text) => new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`);
try {
  const page = browser.pages()[0] ?? (await browser.newPage());
  page.on("pageerror", (e) => { console.error(`page error: ${e}`); process.exitCode = 1; });
  await page.goto(url);
  const row = page.locator(`#topology tr[data-sub="${subscription}"]`);
  await row.locator(".backlog", { hasText: exactly(backlog) }).waitFor({ timeout: 60000 });
  step(`topology shows ${subscription} with a backlog of ${backlog}`);
  await row.locator(".scheduled", { hasText: exactly(scheduled) }).waitFor({ timeout: 10000 });
  const headers = await page.locator("#topology thead th").allTextContents();
  const cells = await row.locator("td").evaluateAll((tds) => tds.map((td) => td.className));
  const column = headers.indexOf("Scheduled");
  if (column < 0 || !cells[column].split(" ").includes("scheduled")) {
    throw new Error(`the scheduled cell is not under the Scheduled header: ${JSON.stringify({ headers, cells })}`);
  }
  step(`of it, ${scheduled} scheduled, under the Scheduled header`);
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
