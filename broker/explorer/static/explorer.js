// Starts GraphiQL against the endpoint this page was served from: /graphql (the seed's
// form) or /graphql/vN (the released form). A file, not an inline script, because the
// page's Content-Security-Policy allows scripts from the broker only.
(function () {
  "use strict";
  var container = document.getElementById("graphiql");
  var oidc = container.dataset.auth === "oidc";
  var endpoint = window.location.origin + window.location.pathname;
  var intro = [
    "# The event broker's GraphQL API at " + window.location.pathname + ".",
    "# Run it with Ctrl-Enter or the ▶ button; the book icon on the left documents the schema.",
  ];
  if (oidc) {
    intro.push(
      "# Every request needs your bearer token: open Headers below and enter",
      '#   {"Authorization": "Bearer <your token>"}',
      "# then reload the schema with Shift-Ctrl-R."
    );
  }
  var defaultQuery =
    intro.join("\n") +
    "\nquery Namespaces {\n  event_namespaces {\n    objects {\n      name\n      owner\n      public\n    }\n  }\n}\n";
  var fetcher = GraphiQL.createFetcher({ url: endpoint });
  ReactDOM.createRoot(container).render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: defaultQuery,
      defaultEditorToolsVisibility: oidc ? "headers" : true,
      // Tokens pasted into the headers editor stay in this tab, not in localStorage.
      shouldPersistHeaders: false,
    })
  );
})();
