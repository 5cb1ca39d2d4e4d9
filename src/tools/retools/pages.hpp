#pragma once
// The dashboard's pages as a display model (sections of cards, charts,
// tables and actions), rendered to HTML by the server and to DOM nodes by
// app.js from the same JSON, so a refresh needs no HTML from the server.

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "views.hpp"

namespace retools::tools {

/// The pages, in menu order: overview, queues, workers, failed, scheduled, periodic, cache.
const std::vector<std::string>& page_names();
/// The data of a page (what /api/<name> returns); throws std::out_of_range for an unknown page.
nlohmann::json page_data(const Views& views, std::string_view name);
/// The display model of a page built from its data.
nlohmann::json page_model(std::string_view name, const nlohmann::json& data);
/// The whole HTML document of a page, every value escaped. `csrf` goes in a
/// meta tag and in every form.
std::string render_page(const nlohmann::json& model, const std::string& server, const std::string& csrf,
                        int refresh_seconds);
/// The token login form (when --auth-token is set), with an optional message.
std::string render_login(std::string_view message);

}  // namespace retools::tools
