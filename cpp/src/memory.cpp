// The memory model and budget of smat_deploy/runtime/memory.py and sizing.py, for the OpenVINO backend: a call's
// peak predicted from the padded token grid (the coefficients come from the generated contract header), and
// the default budget (60% of the memory available plus what the process holds). A photo whose prediction
// does not fit is refused in one line before anything is allocated, never an out-of-memory crash.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "contract.hpp"
#include "internal.hpp"

namespace smat {
namespace {

constexpr double kMB = 1e6;

struct Grid {
    long long height, width;
};

Grid padded_grid(int height, int width) {  // contract.padded_grid, the official padding quirk included
    const int p = contract::kPatchSize;
    if (height % p || width % p) return {height / p + 1, width / p + 1};
    return {height / p, width / p};
}

struct Phases {
    double backbone, decoder;  // bytes per image
};

Phases phases(const contract::MemoryProfile& profile, int height, int width) {
    const Grid grid = padded_grid(height, width);
    const double tokens = static_cast<double>(grid.height * grid.width);
    const double score_bytes = contract::kAttentionHeads * (tokens + 1) * (tokens + 1) * 4;
    const double channel_bytes = static_cast<double>(contract::kDecoderScale) * contract::kDecoderScale * tokens * 4;
    return {profile.attention_buffers * score_bytes + profile.backbone_channels * channel_bytes,
            profile.decoder_channels * channel_bytes};
}

double embedding_bytes(int batch, int height, int width) {
    const Grid grid = padded_grid(height, width);
    double total = 0;
    for (const auto& tensor : contract::kEmbeddingTensors) {
        const double sides = tensor.scale == 0 ? 1.0 : static_cast<double>(tensor.scale * grid.height) * (tensor.scale * grid.width);
        total += static_cast<double>(batch) * tensor.channels * sides * 4;
    }
    return total;
}

double read_kib(const char* path, const char* key) {  // a "Key:   123 kB" line of a /proc file, in bytes; -1: none
    std::ifstream file(path);
    std::string line;
    const std::string prefix = std::string(key) + ":";
    while (std::getline(file, line)) {
        if (line.rfind(prefix, 0) == 0) {
            std::istringstream fields(line.substr(prefix.size()));
            double value = -1;
            fields >> value;
            return value * 1024.0;
        }
    }
    return -1;
}

double read_number(const char* path) {
    std::ifstream file(path);
    std::string text;
    if (!(file >> text) || text == "max") return -1;
    try {
        return std::stod(text);
    } catch (...) {
        return -1;
    }
}

double cgroup_room() {  // what the process's cgroup still allows (v2, else v1); -1: no limit
    const std::pair<const char*, const char*> files[] = {
        {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"},
        {"/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"},
    };
    for (const auto& [limit_file, usage_file] : files) {
        const double limit = read_number(limit_file);
        if (limit < 0 || limit >= std::pow(2.0, 60)) continue;
        const double usage = read_number(usage_file);
        if (usage < 0) continue;
        return std::max(0.0, limit - usage);
    }
    return -1;
}

std::string thousands(double mb) {
    const long long value = std::llround(mb);
    std::string digits = std::to_string(value < 0 ? -value : value), out;
    for (std::size_t i = 0; i < digits.size(); ++i) {
        if (i && (digits.size() - i) % 3 == 0) out += ',';
        out += digits[i];
    }
    return (value < 0 ? "-" : "") + out;
}

}  // namespace

double estimate_memory_mb(const std::string& role, int batch, int height, int width) {
    if (batch < 1 || height < 1 || width < 1) detail::fail(Status::InvalidArgument, "batch, height and width must be positive");
    if (role == "pair") {
        const auto& profile = contract::kOpenVinoPair;
        const Phases p = phases(profile, height, width);
        const double encoder = batch * p.backbone * profile.allocator + profile.fixed_mb * kMB;
        const double decoder = batch * p.decoder * profile.allocator + profile.fixed_mb * kMB;
        return std::max(encoder, embedding_bytes(batch, height, width) + decoder) / kMB;
    }
    const bool whole = role == "whole";
    if (!whole && role != "encoder" && role != "decoder")
        detail::fail(Status::InvalidArgument, "role must be whole, encoder, decoder or pair, got '" + role + "'");
    const auto& profile = whole ? contract::kOpenVinoWhole : contract::kOpenVinoPair;
    const Phases p = phases(profile, height, width);
    const double per_image = role == "whole" ? std::max(p.backbone, p.decoder) : role == "encoder" ? p.backbone : p.decoder;
    return (batch * per_image * profile.allocator + profile.fixed_mb * kMB) / kMB;
}

namespace detail {

namespace {

struct CallBudget {
    bool active = false;  // false: no budget (nothing to read, or the caller turned it off)
    double call_mb = 0;   // what one call may add to the process
    std::string source;
};

CallBudget call_budget(double max_memory_mb) {
    CallBudget budget;
    if (max_memory_mb < 0) return budget;  // the caller turned the check off
    const double resident = std::max(0.0, read_kib("/proc/self/status", "VmRSS")) / kMB;
    double total;
    if (max_memory_mb > 0) {
        total = max_memory_mb;
        char text[64];
        std::snprintf(text, sizeof text, "max_memory_mb %g", max_memory_mb);
        budget.source = text;
    } else {
        double available = read_kib("/proc/meminfo", "MemAvailable");
        const double room = cgroup_room();
        if (room >= 0) available = available >= 0 ? std::min(available, room) : room;
        if (available < 0) return budget;  // nothing to read: no prediction to hold a call to
        total = resident + contract::kDefaultMemoryShare * available / kMB;
        budget.source = std::to_string(static_cast<int>(std::lround(contract::kDefaultMemoryShare * 100))) + "% of the " +
                        thousands(available / kMB) + " MB available + " + thousands(resident) + " MB resident";
    }
    budget.call_mb = total - resident;
    budget.active = true;
    return budget;
}

std::pair<int, int> scaled_size(int height, int width, int long_side) {  // images.scaled_size: (height, width)
    const double scale = static_cast<double>(long_side) / std::max(height, width);
    return {std::max(contract::kMinSide, static_cast<int>(std::nearbyint(height * scale))),
            std::max(contract::kMinSide, static_cast<int>(std::nearbyint(width * scale)))};
}

}  // namespace

void check_memory(const std::string& role, int batch, int height, int width, double max_memory_mb) {
    const CallBudget budget = call_budget(max_memory_mb);
    if (!budget.active) return;
    const double needed = estimate_memory_mb(role, batch, height, width);
    const double free = budget.call_mb;
    if (needed <= free) return;
    fail(Status::OutOfMemory,
         std::string(batch > 1 ? std::to_string(batch) + " photos of " : "a ") + std::to_string(width) + "x" +
             std::to_string(height) + (batch > 1 ? "" : " photo") + " needs about " + thousands(needed) +
             " MB on OpenVINO, above the memory budget's " + thousands(std::max(0.0, free)) + " MB (" + budget.source +
             "): scale it down before calling, open the engine with Options::size_policy (smat-deploy's size policy), "
             "or set a larger Options::max_memory_mb");
}

RunSize plan_size(int height, int width, const ModelInfo& limits, const Options& options) {
    if (options.scale_to != 0 && options.scale_to < contract::kMinSide)
        fail(Status::InvalidArgument, "scale_to must be at least " + std::to_string(contract::kMinSide) + ", got " + std::to_string(options.scale_to));
    if (options.max_side != 0 && options.max_side < contract::kMinSide)
        fail(Status::InvalidArgument, "max_side must be at least " + std::to_string(contract::kMinSide) + ", got " + std::to_string(options.max_side));
    const int scale_to = options.scale_to ? options.scale_to : contract::kDefaultScaleTo;
    const CallBudget budget = call_budget(options.max_memory_mb);
    const auto predicted = [&](int run_height, int run_width) {  // Sizing._predicted for one photo, in MB
        double host = static_cast<double>(height) * width * contract::kHostBytesPerPixel;
        if (run_height != height || run_width != width)
            host = (host + static_cast<double>(run_height) * run_width * contract::kScaledBytesPerPixel) / kMB + contract::kStripMB;
        else
            host /= kMB;
        return estimate_memory_mb("whole", 1, run_height, run_width) + host;
    };
    const auto fits = [&](int run_height, int run_width) { return !budget.active || predicted(run_height, run_width) <= budget.call_mb; };
    const auto within = [&](int h, int w) { return h <= limits.max_height && w <= limits.max_width; };
    const int long_side = std::max(height, width);
    const bool full_ok = options.max_side == 0 || long_side <= options.max_side;
    if (full_ok && within(height, width) && fits(height, width)) return {width, height, false, "full size"};
    int ceiling = long_side;
    std::string reason = "scaled to fit the budget";
    if (options.max_side != 0 && options.max_side < ceiling) {
        ceiling = options.max_side;
        reason = "scaled to max_side " + std::to_string(options.max_side);
    }
    double limit_scale = std::min({1.0, static_cast<double>(limits.max_height) / height, static_cast<double>(limits.max_width) / width});
    int limit = static_cast<int>(long_side * limit_scale);
    while (limit > contract::kMinSide) {
        const auto [h, w] = scaled_size(height, width, limit);
        if (within(h, w)) break;
        --limit;
    }
    if (limit < ceiling) {
        ceiling = limit;
        reason = "scaled to the engine's size limits";
    }
    {
        const auto [h, w] = scaled_size(height, width, ceiling);
        if (!fits(h, w)) {
            ceiling = std::min(ceiling, scale_to);
            reason = "scaled to fit the budget";
        }
    }
    int low = contract::kMinSide, high = ceiling;
    {
        const auto [h, w] = scaled_size(height, width, low);
        if (!fits(h, w)) {
            fail(Status::OutOfMemory, "a " + std::to_string(width) + "x" + std::to_string(height) + " photo needs at least " +
                                          thousands(predicted(h, w)) + " MB even at " + std::to_string(w) + "x" + std::to_string(h) +
                                          ", more than the " + thousands(budget.call_mb) + " MB a call may take (" + budget.source +
                                          "); raise Options::max_memory_mb");
        }
    }
    while (low < high) {
        const int middle = (low + high + 1) / 2;
        const auto [h, w] = scaled_size(height, width, middle);
        if (fits(h, w)) low = middle;
        else high = middle - 1;
    }
    if (low < ceiling) reason = "scaled to fit the budget";
    const auto [h, w] = scaled_size(height, width, low);
    return {w, h, w != width || h != height, reason};
}

}  // namespace detail
}  // namespace smat
