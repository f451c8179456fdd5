// Prompt rasterisation and the JSON prompt format, equal to smat_deploy/prompts.py pixel for pixel.
//
// Python's round() and numpy's rint round half to even: std::nearbyint in the default rounding mode does
// the same. A scribble samples each segment at numpy.linspace(0, 1, steps + 1) (i * (1 / steps), the last
// exactly 1) and rounds start + t * (end - start); the build turns off floating-point contraction so
// that no fused multiply-add changes a sample.
#include <algorithm>
#include <cfenv>
#include <cmath>
#include <fstream>
#include <sstream>

#include "contract.hpp"
#include "internal.hpp"

namespace smat {
namespace {

using detail::fail;

std::string g(double value) {  // Python's f"{value:g}"
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, "%g", value);
    return buffer;
}

double round_half_even(double value) { return std::nearbyint(value); }

void mark_points(const Point& point, int width, int height, std::vector<std::uint8_t>& mask) {
    const double x = round_half_even(point.x), y = round_half_even(point.y);
    if (!(x >= 0 && x < width && y >= 0 && y < height)) {
        fail(Status::BadPrompt, "point (" + g(point.x) + ", " + g(point.y) + ") lies outside the " +
                                    std::to_string(width) + "x" + std::to_string(height) + " image");
    }
    if (point.radius < 0) fail(Status::BadPrompt, "point radius must be >= 0, got " + std::to_string(point.radius));
    const long long r = point.radius, cx = static_cast<long long>(x), cy = static_cast<long long>(y);
    const long long x0 = std::max(0LL, cx - r), x1 = std::min<long long>(width, cx + r + 1);
    const long long y0 = std::max(0LL, cy - r), y1 = std::min<long long>(height, cy + r + 1);
    for (long long row = y0; row < y1; ++row)
        std::fill(mask.begin() + row * width + x0, mask.begin() + row * width + x1, 1);
}

void mark_box(const Box& box, int width, int height, std::vector<std::uint8_t>& mask) {
    if (!(box.x1 > box.x0 && box.y1 > box.y0)) {
        fail(Status::BadPrompt, "box needs x0 < x1 and y0 < y1, got (" + g(box.x0) + ", " + g(box.y0) + ", " +
                                    g(box.x1) + ", " + g(box.y1) + ")");
    }
    auto clip = [](double v, int limit) { return static_cast<long long>(std::min(std::max(round_half_even(v), 0.0), double(limit))); };
    const long long x0 = clip(box.x0, width), x1 = clip(box.x1, width);
    const long long y0 = clip(box.y0, height), y1 = clip(box.y1, height);
    if (x0 >= x1 || y0 >= y1) {
        fail(Status::BadPrompt, "box (" + g(box.x0) + ", " + g(box.y0) + ", " + g(box.x1) + ", " + g(box.y1) +
                                    ") does not overlap the " + std::to_string(width) + "x" + std::to_string(height) +
                                    " image");
    }
    for (long long row = y0; row < y1; ++row)
        std::fill(mask.begin() + row * width + x0, mask.begin() + row * width + x1, 1);
}

void mark_scribble(const Scribble& scribble, int width, int height, std::vector<std::uint8_t>& mask) {
    if (scribble.points.empty()) fail(Status::BadPrompt, "a scribble needs at least one point");
    if (scribble.width < 1) fail(Status::BadPrompt, "scribble width must be >= 1, got " + std::to_string(scribble.width));
    const long long margin = scribble.width;
    const long long canvas_w = width + 2 * margin, canvas_h = height + 2 * margin;
    if (canvas_w * canvas_h > (1LL << 34)) fail(Status::BadPrompt, "scribble width is too large for the image");
    std::vector<std::uint8_t> canvas(static_cast<std::size_t>(canvas_w * canvas_h), 0);
    auto stamp = [&](double fx, double fy) {
        // numpy: np.rint(...).astype(int64) + margin, kept when inside the canvas
        if (!(std::fabs(fx) < 4e18 && std::fabs(fy) < 4e18)) return;
        const long long x = static_cast<long long>(fx) + margin, y = static_cast<long long>(fy) + margin;
        if (x >= 0 && x < canvas_w && y >= 0 && y < canvas_h) canvas[static_cast<std::size_t>(y * canvas_w + x)] = 1;
    };
    const auto& pts = scribble.points;
    const std::size_t segments = pts.size() > 1 ? pts.size() - 1 : 1;
    for (std::size_t s = 0; s < segments; ++s) {
        const auto start = pts[s], end = pts.size() > 1 ? pts[s + 1] : pts[s];
        const double dx = end.first - start.first, dy = end.second - start.second;
        const double longest = std::max(std::fabs(dx), std::fabs(dy));
        const double ceiled = std::ceil(longest);
        if (!(ceiled * 2 < 1e9)) fail(Status::BadPrompt, "scribble segment is too long (" + g(longest) + " px)");
        const long long steps = std::max(1LL, static_cast<long long>(ceiled) * 2);
        const double step = 1.0 / static_cast<double>(steps);
        for (long long i = 0; i <= steps; ++i) {
            const double t = i == steps ? 1.0 : static_cast<double>(i) * step;
            const double tx = t * dx, ty = t * dy;
            stamp(std::nearbyint(start.first + tx), std::nearbyint(start.second + ty));
        }
    }
    // binary_dilation by a width x width square: offsets -(w/2) .. (w-1)/2 on each axis; rows then columns.
    const long long before = scribble.width / 2, after = (scribble.width - 1) / 2;
    std::vector<std::uint8_t> rows(canvas.size(), 0);
    for (long long y = 0; y < canvas_h; ++y) {
        const std::uint8_t* in = &canvas[static_cast<std::size_t>(y * canvas_w)];
        std::uint8_t* out = &rows[static_cast<std::size_t>(y * canvas_w)];
        for (long long x = 0; x < canvas_w; ++x) {
            if (!in[x]) continue;
            // a marked source pixel x marks x - w/2 .. x + (w-1)/2 (scipy's origin for even widths)
            for (long long o = std::max(0LL, x - before); o <= std::min(canvas_w - 1, x + after); ++o) out[o] = 1;
        }
    }
    bool any = false;
    for (long long y = 0; y < canvas_h; ++y) {
        for (long long x = 0; x < canvas_w; ++x) {
            if (!rows[static_cast<std::size_t>(y * canvas_w + x)]) continue;
            for (long long o = std::max(0LL, y - before); o <= std::min(canvas_h - 1, y + after); ++o) {
                const long long my = o - margin, mx = x - margin;
                if (my >= 0 && my < height && mx >= 0 && mx < width) {
                    mask[static_cast<std::size_t>(my * width + mx)] = 1;
                    any = true;
                }
            }
        }
    }
    if (!any) {
        fail(Status::BadPrompt,
             "scribble does not touch the " + std::to_string(width) + "x" + std::to_string(height) + " image");
    }
}

void mark_mask(const MaskPrompt& prompt, int width, int height, std::vector<std::uint8_t>& mask) {
    MaskPrompt loaded;
    const MaskPrompt* source = &prompt;
    std::string name = "mask array";
    if (!prompt.path.empty()) {
        loaded = read_mask(prompt.path);
        source = &loaded;
        name = "mask " + prompt.path;
    }
    if (source->width != width || source->height != height) {
        fail(Status::BadPrompt, name + " is " + std::to_string(source->width) + "x" + std::to_string(source->height) +
                                    " but the image is " + std::to_string(width) + "x" + std::to_string(height));
    }
    if (source->pixels.size() != static_cast<std::size_t>(width) * height) {
        fail(Status::InvalidArgument, name + " holds " + std::to_string(source->pixels.size()) + " pixels, not " +
                                          std::to_string(static_cast<std::size_t>(width) * height));
    }
    for (std::size_t i = 0; i < mask.size(); ++i)
        if (source->pixels[i]) mask[i] = 1;
}

// -- JSON ---------------------------------------------------------------------------------------------
std::string repr(const nlohmann::json& value) {  // close to Python's repr of the parsed value
    if (value.is_string()) return "'" + value.get<std::string>() + "'";
    if (value.is_boolean()) return value.get<bool>() ? "True" : "False";
    if (value.is_null()) return "None";
    return value.dump();
}

double number(const nlohmann::json& value, const std::string& where) {
    if (!value.is_number() || !std::isfinite(value.get<double>()))
        fail(Status::BadPrompt, where + " must be a finite number, got " + repr(value));
    return value.get<double>();
}

int integer(const nlohmann::json& value, const std::string& where) {
    const double v = number(value, where);
    if (v != std::trunc(v)) fail(Status::BadPrompt, where + " must be a whole number, got " + repr(value));
    if (std::fabs(v) > 1e9) fail(Status::BadPrompt, where + " is out of range, got " + repr(value));
    return static_cast<int>(v);
}

std::string type_name(const nlohmann::json& value) {
    if (value.is_array()) return "list";
    if (value.is_string()) return "str";
    if (value.is_boolean()) return "bool";
    if (value.is_number_integer()) return "int";
    if (value.is_number()) return "float";
    if (value.is_null()) return "NoneType";
    return "dict";
}

std::vector<std::pair<double, double>> scribble_points(const nlohmann::json& points, const std::string& where) {
    if (!points.is_array() || points.empty()) fail(Status::BadPrompt, where + " must be a non-empty list of [x, y] pairs");
    std::vector<std::pair<double, double>> out;
    for (std::size_t i = 0; i < points.size(); ++i) {
        const auto& pair = points[i];
        const std::string item = where + "[" + std::to_string(i) + "]";
        if (!pair.is_array() || pair.size() != 2) fail(Status::BadPrompt, item + " must be an [x, y] pair, got " + repr(pair));
        out.emplace_back(number(pair[0], item + "[0]"), number(pair[1], item + "[1]"));
    }
    return out;
}

Prompt parse_one(const nlohmann::json& obj, const std::string& where, const std::string& base_dir) {
    if (!obj.is_object()) fail(Status::BadPrompt, where + " must be an object with a \"type\", got " + type_name(obj));
    static const std::vector<std::pair<std::string, std::pair<std::vector<std::string>, std::vector<std::string>>>> kFields = {
        {"point", {{"x", "y"}, {"radius"}}},
        {"box", {{"x0", "y0", "x1", "y1"}, {}}},
        {"scribble", {{"points"}, {"width"}}},
        {"mask", {{"path"}, {}}},
    };
    const auto type = obj.find("type");
    const auto fields = std::find_if(kFields.begin(), kFields.end(), [&](const auto& entry) {
        return type != obj.end() && type->is_string() && type->template get<std::string>() == entry.first;
    });
    if (fields == kFields.end()) {
        fail(Status::BadPrompt, where + ": unknown type " + (type == obj.end() ? std::string("None") : repr(*type)) +
                                    " (expected one of point, box, scribble, mask)");
    }
    const std::string kind = fields->first;
    const auto& [required, optional] = fields->second;
    std::vector<std::string> missing, unknown;
    for (const auto& key : required)
        if (!obj.contains(key)) missing.push_back(key);
    for (const auto& item : obj.items()) {
        const std::string& key = item.key();
        if (key == "type") continue;
        if (std::find(required.begin(), required.end(), key) == required.end() &&
            std::find(optional.begin(), optional.end(), key) == optional.end())
            unknown.push_back(key);
    }
    auto joined = [](std::vector<std::string> names) {
        std::sort(names.begin(), names.end());
        std::string text;
        for (const auto& n : names) text += (text.empty() ? "" : ", ") + n;
        return text;
    };
    if (!missing.empty()) fail(Status::BadPrompt, where + " (" + kind + ") is missing " + joined(missing));
    if (!unknown.empty()) fail(Status::BadPrompt, where + " (" + kind + ") has unknown field(s) " + joined(unknown));
    if (kind == "point") {
        Point p{number(obj["x"], where + ".x"), number(obj["y"], where + ".y"), contract::kDefaultPointRadius};
        if (obj.contains("radius")) p.radius = integer(obj["radius"], where + ".radius");
        return p;
    }
    if (kind == "box") {
        return Box{number(obj["x0"], where + ".x0"), number(obj["y0"], where + ".y0"), number(obj["x1"], where + ".x1"),
                   number(obj["y1"], where + ".y1")};
    }
    if (kind == "scribble") {
        Scribble s;
        s.width = contract::kDefaultScribbleWidth;
        if (obj.contains("width")) s.width = integer(obj["width"], where + ".width");
        s.points = scribble_points(obj["points"], where + ".points");
        return s;
    }
    const auto& path = obj["path"];
    if (!path.is_string() || path.get<std::string>().empty()) fail(Status::BadPrompt, where + ".path must be a file path string");
    MaskPrompt m;
    const std::string relative = path.get<std::string>();
    m.path = (!relative.empty() && relative[0] == '/') || base_dir.empty() ? relative : base_dir + "/" + relative;
    return m;
}

}  // namespace

std::vector<std::uint8_t> rasterize(const Prompts& prompts, int width, int height) {
    if (width < 1 || height < 1) detail::fail(Status::InvalidArgument, "a mask needs a positive size");
    std::vector<std::uint8_t> mask(static_cast<std::size_t>(width) * height, 0);
    for (const auto& prompt : prompts) {
        if (const auto* p = std::get_if<Point>(&prompt)) mark_points(*p, width, height, mask);
        else if (const auto* b = std::get_if<Box>(&prompt)) mark_box(*b, width, height, mask);
        else if (const auto* s = std::get_if<Scribble>(&prompt)) mark_scribble(*s, width, height, mask);
        else mark_mask(std::get<MaskPrompt>(prompt), width, height, mask);
    }
    return mask;
}

namespace {
nlohmann::json parse_json(const std::string& text, const std::string& where) {
    try {
        return nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& err) {
        fail(Status::BadPrompt, "malformed prompt JSON" + where + ": " + err.what());
    }
}

//! A prompt file's JSON (prompts.py's _read_json): "prompt file not found", or "malformed prompt JSON in PATH".
nlohmann::json read_json_file(const std::string& path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) fail(Status::NotFound, "prompt file not found: " + path);
    std::stringstream text;
    text << file.rdbuf();
    return parse_json(text.str(), " in " + path);
}

Prompts parse_list(const nlohmann::json& data, const std::string& base_dir) {
    Prompts prompts;
    if (data.is_array()) {
        for (std::size_t i = 0; i < data.size(); ++i)
            prompts.push_back(parse_one(data[i], "prompt[" + std::to_string(i) + "]", base_dir));
    } else {
        prompts.push_back(parse_one(data, "prompt[0]", base_dir));
    }
    return prompts;
}
}  // namespace

Prompts parse_prompts(const std::string& json_text, const std::string& base_dir) {
    return parse_list(parse_json(json_text, ""), base_dir);
}

Prompts load_prompt_file(const std::string& path) {
    const auto slash = path.find_last_of('/');
    return parse_list(read_json_file(path), slash == std::string::npos ? "." : path.substr(0, slash));
}

Scribble load_scribble_file(const std::string& path, int width) {
    nlohmann::json data = read_json_file(path);
    const std::string where = "scribble " + path;
    if (data.is_object()) {  // {"type": "scribble", **data}: the file's own keys win
        if (!data.contains("type")) data["type"] = "scribble";
        const Prompt prompt = parse_one(data, where, ".");
        if (const auto* scribble = std::get_if<Scribble>(&prompt)) return *scribble;
        fail(Status::BadPrompt, where + " is not a scribble");
    }
    Scribble scribble;
    scribble.points = scribble_points(data, where);
    scribble.width = width;
    return scribble;
}

}  // namespace smat
