// Drives the run console's page in headless Chromium, for agent-runtime/tests/console_browser.rs.
// Usage: node drive.mjs BASE_URL ASKED_RUN_A ASKED_RUN_B ASKED_RUN_C SCREENSHOT_PATH ASKED_RUN_D PARENT_RUN
// Prints one line per step; exits 1 (with the reason on stderr) at the first check that fails.
import { chromium } from "playwright-core";

const [base, runA, runB, runC, screenshot, runD, parent] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const step = (what) => console.log(`ok: ${what}`);
const fail = (why) => { throw new Error(why); };

const browser = await chromium.launch({ executablePath, args: ["--no-sandbox", "--disable-gpu"] });
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const dialogs = [];
  page.on("dialog", async (d) => { dialogs.push(`${d.type()}: ${d.message()}`); await d.accept(); });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  const timeout = 20000;

  // The list shows the runs; a run submitted meanwhile appears without a reload.
  await page.goto(`${base}/#runs`);
  await page.waitForSelector(`tr[data-run="${runA}"]`, { timeout });
  await page.waitForSelector(`tr[data-run="${runB}"]`, { timeout });
  step("the list shows both asking runs");
  const submitted = await page.evaluate(async (b) => {
    const r = await fetch(`${b}/api/v1/runs`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ agent: "review", input: { n: 1 } }) });
    return (await r.json()).run_id;
  }, base);
  await page.waitForSelector(`tr[data-run="${submitted}"] [data-status="queued"]`, { timeout });
  step("a run submitted meanwhile appears, queued, without a reload");

  // A run: its graph coloured by the run, every status in the legend, a hostile name as text.
  await page.goto(`${base}/#run/${runA}`);
  await page.waitForSelector(`#graph [data-state="review"][data-status="Running"]`, { timeout });
  await page.waitForSelector(`#graph [data-state="prepare"][data-status="Completed"]`, { timeout });
  step("the run's graph shows prepare completed and review running");
  await page.waitForSelector(`#timeline .lane[data-state="review"] .wait-person`, { timeout });
  const waited = await page.textContent(`#states tr[data-state="review"] td.waited`);
  if (!waited.includes("a person")) fail(`review's wait is not shown: ${waited}`);
  step("the timeline and the state's row show review waiting for a person");
  if (!(await page.$(`#states tr[data-state="review"] [data-action="cancel-state"]`))) fail("the waiting state offers no Cancel");
  if (await page.$(`#states tr[data-state="prepare"] [data-action="cancel-state"]`)) fail("a completed state offers Cancel");
  step("the waiting state offers Cancel, the completed one does not");
  const hostile = "<script>alert(1)</script>";
  const row = await page.$(`#states tr[data-state="${hostile.replace(/"/g, '\\"')}"] td`);
  if (!row || (await row.textContent()) !== hostile) fail("the hostile state name is not shown as text");
  const scripts = await page.evaluate(() => document.querySelectorAll("script").length);
  if (scripts !== 1) fail(`${scripts} script elements: a name became markup`);
  const legend = await page.$$eval("#legend [data-status]", (n) => n.map((e) => e.getAttribute("data-status")));
  if (!legend.includes("Running") || !legend.includes("Completed")) fail(`the legend lists ${legend}`);
  const context = await page.textContent("#context");
  if (!context.includes("<b>bold</b>")) fail("the context is not shown as text");
  step("a state named <script> and markup in the context render as text, with a legend");
  if (screenshot) {
    await page.waitForTimeout(300);
    await page.screenshot({ path: screenshot, fullPage: false });
    step(`screenshot ${screenshot}`);
  }

  // The inbox answers run A; its page then shows it completed.
  await page.goto(`${base}/#inbox`);
  const card = `#inbox .input[data-run="${runA}"]`;
  await page.waitForSelector(card, { timeout });
  await page.fill(`${card} input[name="answer"]`, "approve");
  await page.click(`${card} button[type="submit"]`);
  await page.waitForSelector(card, { state: "detached", timeout });
  if (!dialogs.some((d) => d.startsWith("confirm"))) fail("answering was not confirmed");
  step("the inbox answered run A (confirmed)");
  await page.goto(`${base}/#run/${runA}`);
  await page.waitForSelector(`#graph [data-state="finish"][data-status="Completed"]`, { timeout });
  await page.waitForSelector(`#run-status [data-status="Completed"]`, { timeout });
  if (await page.$(`#states [data-action="cancel-state"]`)) fail("a finished run offers to cancel a state");
  step("run A went on to its end");

  // Live: on run B's page, an answer given elsewhere turns its graph without a reload.
  await page.goto(`${base}/#run/${runB}`);
  await page.waitForSelector(`#graph [data-state="review"][data-status="Running"]`, { timeout });
  const marker = await page.evaluate(() => { window.__stayed = true; return true; });
  const request = await page.evaluate(async ([b, id]) => {
    const r = await fetch(`${b}/api/v1/runs/${id}`);
    return (await r.json()).inputs[0].request_id;
  }, [base, runB]);
  await page.evaluate(async ([b, id, req]) => {
    await fetch(`${b}/api/v1/runs/${id}/inputs/${req}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ answer: "approve" }) });
  }, [base, runB, request]);
  await page.waitForSelector(`#graph [data-state="finish"][data-status="Completed"]`, { timeout });
  const stayed = await page.evaluate(() => window.__stayed === true);
  if (!marker || !stayed) fail("the page reloaded");
  step("run B's graph turned completed live, without a reload");

  // Cancel, confirmed, from run C's page: the run's owner stops it.
  await page.goto(`${base}/#run/${runC}`);
  await page.waitForSelector(`#actions [data-action="cancel"]`, { timeout });
  const before = dialogs.length;
  await page.click(`#actions [data-action="cancel"]`);
  await page.waitForSelector(`#run-status [data-status="Cancelled"]`, { timeout });
  if (!dialogs.slice(before).some((d) => d.startsWith("confirm"))) fail("cancelling was not confirmed");
  if (await page.$(`#actions [data-action="cancel"]`)) fail("a cancelled run still offers Cancel");
  step("Cancel (confirmed) cancelled run C");

  // A state's Cancel, confirmed, from run D's page: the run's owner cancels the state.
  await page.goto(`${base}/#run/${runD}`);
  const cancelState = `#states tr[data-state="review"] [data-action="cancel-state"]`;
  await page.waitForSelector(cancelState, { timeout });
  const asked = dialogs.length;
  await page.click(cancelState);
  await page.waitForSelector(`#states tr[data-state="review"] [data-status="Cancelled"]`, { timeout });
  if (!dialogs.slice(asked).some((d) => d.startsWith("confirm") && d.includes("review"))) fail("cancelling the state was not confirmed");
  step("a state's Cancel (confirmed) cancelled review in run D");

  // A parent run's graph draws the child run its state started inside that state, and
  // does not once unticked.
  await page.goto(`${base}/#run/${parent}`);
  const child = `#graph g.child[data-state="delegate"]`;
  await page.waitForSelector(`${child} [data-state="count"][data-status="Completed"]`, { timeout });
  if (!(await page.isVisible("#expand-children"))) fail("a run with a child offers no way to expand it");
  if (!(await page.$(`#graph .edge.runs[data-from]`))) fail("no arrow from the state to its child");
  step("the parent's graph draws its child run, completed, inside delegate");
  await page.uncheck("#expand");
  await page.waitForSelector(child, { state: "detached", timeout });
  await page.check("#expand");
  await page.waitForSelector(child, { timeout });
  step("unticked, the child is not drawn; ticked again, it is");
  await page.goto(`${base}/#run/${runD}`);
  await page.waitForSelector(`#graph [data-state="review"]`, { timeout });
  if (await page.isVisible("#expand-children")) fail("a run without children offers to expand them");

  if (dialogs.some((d) => d.includes("1") && d.startsWith("alert"))) fail(`an alert ran: ${dialogs}`);
  if (errors.length) fail(`errors on the page: ${errors.join(" | ")}`);
  step("no script ran from stored text, no error on the page");
} catch (e) {
  console.error(`failed: ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
