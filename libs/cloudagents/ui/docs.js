// Starts Swagger UI on the api's own document. validatorUrl: null keeps the page from asking
// an outside validator about the document; the token given to "Authorize" stays in the page.
"use strict";
window.addEventListener("DOMContentLoaded", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
