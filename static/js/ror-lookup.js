// ATOM Partner Portal — the ROR look-up of the application form (progressive enhancement: without
// this script the search form lists matches on the page and a link fills the form on the server).
"use strict";
(() => {
  const search = document.getElementById("ror-search");
  const results = document.getElementById("ror-results");
  const form = document.getElementById("application-form");
  if (!(search instanceof HTMLFormElement) || !results || !form) {
    return;
  }
  const input = search.querySelector("input[name='q']");
  const url = search.dataset.lookupUrl;
  if (!(input instanceof HTMLInputElement) || !url) {
    return;
  }
  let timer = 0;
  let latest = 0;

  const field = (name) => form.querySelector(`[name='${name}']`);

  const setValue = (name, value) => {
    const el = field(name);
    if (el && value !== null && value !== undefined) {
      el.value = value;
      el.dispatchEvent(new Event("change", { bubbles: true }));
    }
  };

  const status = (text) => {
    results.replaceChildren();
    const p = document.createElement("p");
    p.className = "small mb-0";
    p.textContent = text;
    results.append(p);
  };

  const choose = (record) => {
    setValue("ror_id", record.id);
    setValue("name", record.name);
    setValue("country", record.country_code);
    setValue("website", record.website || "");
    if (record.domains && record.domains.length) {
      setValue("email_domains", record.domains.join("\n"));
    }
    status(`Filled in from ROR: ${record.name}. Check the details and complete the rest.`);
    const next = field("statement");
    if (next instanceof HTMLElement) {
      next.focus();
    }
  };

  const show = (records) => {
    if (!records.length) {
      status("Nothing found in the portal's copy of ROR. Enter the details yourself.");
      return;
    }
    const list = document.createElement("ul");
    list.className = "list-group";
    for (const record of records) {
      const item = document.createElement("li");
      item.className = "list-group-item";
      const button = document.createElement("button");
      button.type = "button";
      button.className = "btn btn-link p-0 text-start";
      button.textContent = record.name;
      button.addEventListener("click", () => choose(record));
      const where = document.createElement("span");
      where.className = "small text-body-secondary d-block";
      const place = [record.city, record.country].filter(Boolean).join(", ");
      where.textContent = record.domains.length ? `${place} · ${record.domains.join(", ")}` : place;
      item.append(button, where);
      list.append(item);
    }
    results.replaceChildren(list);
  };

  const lookUp = async () => {
    const query = input.value.trim();
    if (query.length < 2) {
      results.replaceChildren();
      return;
    }
    const mine = ++latest;
    try {
      const response = await fetch(`${url}?q=${encodeURIComponent(query)}`, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      const body = await response.json();
      if (mine === latest) {
        if (response.ok) {
          show(body.results || []);
        } else {
          status(body.error || body.message || "The look-up failed; enter the details yourself.");
        }
      }
    } catch {
      if (mine === latest) {
        status("The look-up failed; enter the details yourself.");
      }
    }
  };

  input.addEventListener("input", () => {
    window.clearTimeout(timer);
    timer = window.setTimeout(lookUp, 250);
  });
  search.addEventListener("submit", (event) => {
    event.preventDefault();
    window.clearTimeout(timer);
    lookUp();
  });
})();
