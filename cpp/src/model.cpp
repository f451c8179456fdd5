// Model files and their sidecar manifests, checked against the contract (src/contract.hpp, generated from
// smat_deploy/contract.py) as smat_deploy/runtime/base.py and smat_deploy/pair.py check them.
#include <algorithm>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

#include "contract.hpp"
#include "internal.hpp"

namespace smat::detail {

void fail(Status status, const std::string& message) { throw Error(status, message); }

std::string file_name(const std::string& path) {
    const auto slash = path.find_last_of('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string sidecar_path(const std::string& model_path) {
    const auto slash = model_path.find_last_of('/');
    const auto dot = model_path.find_last_of('.');
    if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return model_path + ".json";
    return model_path.substr(0, dot) + ".json";
}

Manifest read_manifest(const std::string& model_path) {
    Manifest manifest;
    manifest.path = sidecar_path(model_path);
    std::ifstream file(manifest.path, std::ios::binary);
    if (!file) return manifest;
    std::stringstream text;
    text << file.rdbuf();
    try {
        manifest.json = nlohmann::json::parse(text.str());
    } catch (const nlohmann::json::parse_error& err) {
        fail(Status::BadModel, manifest.path + " is not valid JSON: " + err.what());
    }
    manifest.present = true;
    return manifest;
}

namespace {
const contract::Role* find_role(const std::string& name) {
    for (const auto& role : contract::kRoles)
        if (role.name == name) return &role;
    return nullptr;
}
bool is_pair_role(const std::string& role) { return role == "encoder" || role == "decoder"; }
}  // namespace

std::string manifest_role(const Manifest& manifest) {
    if (!manifest.present || !manifest.json.is_object()) return "";
    const auto& json = manifest.json;
    if (json.contains("role") && json["role"].is_string() && find_role(json["role"].get<std::string>()))
        return json["role"].get<std::string>();
    if (json.contains("pair") && json["pair"].is_object()) {
        const auto& pair = json["pair"];
        if (pair.contains("role") && pair["role"].is_string() && is_pair_role(pair["role"].get<std::string>()))
            return pair["role"].get<std::string>();
        return "";
    }
    return json.empty() ? "" : "whole";
}

std::vector<std::string> role_inputs(const std::string& role) {
    const auto* found = find_role(role);
    return found ? std::vector<std::string>(found->inputs.begin(), found->inputs.begin() + found->input_count)
                 : std::vector<std::string>{};
}

std::vector<std::string> role_outputs(const std::string& role) {
    const auto* found = find_role(role);
    return found ? std::vector<std::string>(found->outputs.begin(), found->outputs.begin() + found->output_count)
                 : std::vector<std::string>{};
}

namespace {
std::string listed(std::vector<std::string> names) {
    std::string text = "[";
    for (std::size_t i = 0; i < names.size(); ++i) text += (i ? ", '" : "'") + names[i] + "'";
    return text + "]";
}

bool same_names(std::vector<std::string> a, std::vector<std::string> b) {
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    return a == b;
}

int bound(const nlohmann::json& dims, const char* name, const char* end, int fallback) {
    if (!dims.is_object() || !dims.contains(name) || !dims[name].is_object()) return fallback;
    const auto& d = dims[name];
    return d.contains(end) && d[end].is_number_integer() ? d[end].get<int>() : fallback;
}
}  // namespace

std::unique_ptr<Backend> open_model(const std::string& path, const std::string& role, const Options& options,
                                    const Manifest& manifest, ModelInfo& info) {
    const std::string name = file_name(path);
    if (manifest.present) {  // the manifest's declared I/O against the role's (pair.py's _check_io)
        for (const char* key : {"inputs", "outputs"}) {
            const auto it = manifest.json.find(key);
            if (it == manifest.json.end() || !it->is_array()) continue;
            std::vector<std::string> names;
            for (const auto& spec : *it)
                if (spec.is_object() && spec.contains("name") && spec["name"].is_string()) names.push_back(spec["name"].get<std::string>());
            const auto wanted = std::string(key) == "inputs" ? role_inputs(role) : role_outputs(role);
            if (!same_names(names, wanted)) {
                fail(Status::BadModel, name + " declares " + key + " " + listed(names) + ", but the " +
                                           (role == "whole" ? std::string("whole model") : "pair's " + role) + " has " +
                                           listed(wanted));
            }
        }
    }
    auto backend = open_backend(path, options);
    const auto inputs = backend->input_names(), outputs = backend->output_names();
    if (!same_names(inputs, role_inputs(role)) || !same_names(outputs, role_outputs(role))) {
        fail(Status::BadModel, path + " is not an SMat " + (role == "whole" ? std::string("model") : role) + ": it takes " +
                                   listed(inputs) + " and gives " + listed(outputs) + ", the contract's " + role +
                                   " takes " + listed(role_inputs(role)) + " and gives " + listed(role_outputs(role)));
    }
    if (const auto bad = backend->non_float_ports(); !bad.empty())
        fail(Status::BadModel, path + " is not an SMat model: " + listed(bad) + " are not float32");
    info.path = path;
    info.role = role;
    info.backend = backend->name();
    info.precision = "float32";
    info.min_side = contract::kMinSide;
    info.max_height = info.max_width = contract::kMaxSide;
    info.max_batch = contract::kMaxBatch;
    if (manifest.present) {
        const auto& json = manifest.json;
        if (json.contains("precision") && json["precision"].is_string()) info.precision = json["precision"].get<std::string>();
        if (json.contains("pair") && json["pair"].is_object() && json["pair"].contains("weights_sha256") &&
            json["pair"]["weights_sha256"].is_string())
            info.weights_sha256 = json["pair"]["weights_sha256"].get<std::string>();
        else if (json.contains("source") && json["source"].is_object() && json["source"].contains("weights_sha256") &&
                 json["source"]["weights_sha256"].is_string())
            info.weights_sha256 = json["source"]["weights_sha256"].get<std::string>();
        const auto dims = json.contains("dimensions") ? json["dimensions"] : nlohmann::json();
        info.min_side = std::max(bound(dims, "height", "min", contract::kMinSide), bound(dims, "width", "min", contract::kMinSide));
        info.max_height = bound(dims, "height", "max", contract::kMaxSide);
        info.max_width = bound(dims, "width", "max", contract::kMaxSide);
        info.max_batch = bound(dims, "batch", "max", contract::kMaxBatch);
    }
    return backend;
}

}  // namespace smat::detail
