// Acme Shop cart page (web-frontend). Served as /static/cart.js.
(function () {
  "use strict";

  var session = window.__SESSION__ || {};

  Sentry.init({
    dsn: session.dsn,
    release: "web-frontend@3.0.1",
    environment: "prod",
  });
  if (session.user) {
    Sentry.setUser({ id: session.user.id, email: session.user.email });
  }
  Sentry.setTag("service", "web-frontend");
  Sentry.setTag("page", "cart");

  var state = { cart: null };

  function formatMoney(amount, currency) {
    return new Intl.NumberFormat("en-US", { style: "currency", currency: currency }).format(amount);
  }

  function renderItems(items) {
    var list = document.getElementById("items");
    list.innerHTML = "";
    items.forEach(function (item) {
      var li = document.createElement("li");
      li.textContent = item.qty + " × " + item.name;
      list.appendChild(li);
    });
    document.getElementById("item-count").textContent = items.length + " item(s)";
  }

  function renderTotals(summary, currency) {
    var total = formatMoney(summary.total, currency);
    var subtotal = formatMoney(summary.subtotal, currency);
    document.getElementById("totals").textContent = "Subtotal " + subtotal + " · Total " + total;
  }

  function renderCart(cart) {
    renderItems(cart.items);
    renderTotals(cart.summary, cart.currency);
  }

  function loadExpressCheckout(cart) {
    var script = document.createElement("script");
    script.src = "https://js.paywidget.example/v3/widget.js";
    script.async = true;
    script.onerror = function () {
      Sentry.captureMessage("Payment widget failed to load", {
        level: "warning",
        tags: { widget: "paywidget-v3" },
        extra: { cart_id: cart.id, src: script.src },
      });
      document.getElementById("express-checkout").textContent = "Express checkout unavailable";
    };
    document.head.appendChild(script);
  }

  function onUpdateCartClick() {
    console.info("recalculating cart", state.cart && state.cart.id);
    renderCart(state.cart);
  }

  function loadCart() {
    return fetch("/api/cart", { credentials: "same-origin" })
      .then(function (response) { return response.json(); })
      .then(function (cart) {
        state.cart = cart;
        renderItems(cart.items);
        if (cart.summary) renderTotals(cart.summary, cart.currency);
        if (cart.express_checkout) loadExpressCheckout(cart);
        document.body.setAttribute("data-ready", "1");
      });
  }

  document.getElementById("update-cart").addEventListener("click", onUpdateCartClick);
  loadCart();
})();
