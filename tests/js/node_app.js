// A small Node service under the official @sentry/node, run by tests/test_js_sdks.py:
// a handled exception, a message and an unhandled promise rejection, then a flush before exit.
const Sentry = require("@sentry/node");

Sentry.init({
  dsn: process.env.SENTRY_DSN,
  release: process.env.SENTRY_RELEASE,
  environment: process.env.SENTRY_ENVIRONMENT,
});

function chargeCard(amount) {
  if (amount > 100) {
    throw new RangeError(`amount ${amount} is over the card limit`);
  }
  return amount;
}

async function loadInvoice(id) {
  await null;
  throw new Error(`invoice ${id} not found`);
}

async function main() {
  // Sentry's own listener runs first (it was added by init); this one only tells us it has run.
  const rejected = new Promise((resolve) => process.on("unhandledRejection", resolve));
  try {
    chargeCard(250);
  } catch (error) {
    Sentry.captureException(error);
  }
  Sentry.captureMessage("nightly export finished with warnings", "warning");
  loadInvoice(7); // never awaited: an unhandled rejection
  await rejected;
  const flushed = await Sentry.close(10000);
  console.log(flushed ? "flushed" : "flush timed out");
  process.exitCode = flushed ? 0 : 1;
}

main();
