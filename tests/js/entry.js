// The browser bundle of tests/test_js_sdks.py: the official @sentry/browser plus a little shop code,
// built by esbuild with --minify, so the frames the SDK reports are those of minified production code.
import * as Sentry from "@sentry/browser";

window.Sentry = Sentry;

window.shop = {
  priceCart(cart) {
    if (!cart.items.length) {
      throw new TypeError(`cart ${cart.id} has no items`);
    }
    return cart.items.reduce((total, item) => total + item.price, 0);
  },
  checkout(cart) {
    return { cart: cart.id, total: window.shop.priceCart(cart) };
  },
};
