// inventory-sync: pulls warehouse stock feeds and pushes them to the catalogue (Node).
// Run by sample_events/generate_js.py: node sync.js <warehouse>, NODE_PATH pointing at @sentry/node.
const Sentry = require("@sentry/node");

Sentry.init({
  dsn: process.env.SENTRY_DSN,
  release: "inventory-sync@4.2.0",
  environment: "prod",
  serverName: "inventory-sync-6f4b8d7c5-p9r2w",
});

const FEEDS = {
  "berlin-1": [
    { line: 1, product: { sku: "SKU-1042", name: "Espresso beans 1kg" }, qty: 40 },
    { line: 2, product: null, qty: 12 },
  ],
  "rotterdam-2": [
    { line: 1, product: { sku: "SKU-3307", name: "Pour-over kettle" }, qty: 120 },
    { line: 2, product: { sku: "SKU-2210", name: "Burr grinder" }, qty: 3 },
    { line: 3, product: null, qty: 7 },
  ],
};

function toCatalogueUpdate(row, warehouse) {
  return { sku: row.product.sku, warehouse, available: row.qty };
}

function applyFeed(rows, warehouse) {
  const updates = [];
  for (const row of rows) {
    Sentry.addBreadcrumb({ category: "feed", message: `row ${row.line}`, data: { warehouse } });
    updates.push(toCatalogueUpdate(row, warehouse));
  }
  return updates;
}

async function syncWarehouse(warehouse) {
  Sentry.setTag("service", "inventory-sync");
  Sentry.setTag("warehouse", warehouse);
  try {
    const updates = applyFeed(FEEDS[warehouse], warehouse);
    console.log(`pushed ${updates.length} updates`);
  } catch (err) {
    Sentry.captureException(err, { extra: { feed_rows: FEEDS[warehouse].length } });
    console.error(`sync of ${warehouse} failed: ${err.message}`);
  }
}

syncWarehouse(process.argv[2] || "berlin-1").then(() => Sentry.flush(5000));
