// smat_matte: `smat-deploy matte` in C++, on the smat library (the same prompts, the same alpha).
//
//   smat_matte photo.jpg --engine export/smat.onnx --box 100,50,420,470 -o alpha.png
//   smat_matte photo.jpg --engine export/ --prompt a.json --prompt b.json -o alphas/   # embeds once
//
// Exit status: 0 done, 2 a bad argument or input (one line on stderr), 1 anything else.
#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "smat/smat.hpp"

namespace {

const char* kUsage =
    "usage: smat_matte PHOTO --engine MODEL -o ALPHA.png [options]\n"
    "\n"
    "Matte one photo with an SMat model exported by `smat-deploy export`: automatic with no prompt,\n"
    "interactive with clicks, boxes, scribbles, masks or prompt files (the JSON `smat-deploy matte\n"
    "--prompt` reads). PNG and JPEG photos; EXIF orientation is applied; the alpha is an 8-bit PNG.\n"
    "\n"
    "  PHOTO                   the photo (PNG or JPEG)\n"
    "  -e, --engine MODEL      smat.onnx (the whole model), or an export folder / smat_encoder.onnx\n"
    "                          (the interactive pair: the photo is embedded once)\n"
    "  -o, --output PATH       the alpha PNG; a folder with several --prompt files (OUT/<stem>.png)\n"
    "  --point X,Y             a click (repeatable); --point-radius R (default 20)\n"
    "  --box X0,Y0,X1,Y1       a half-open box (repeatable)\n"
    "  --scribble FILE         a scribble JSON: [[x,y],...] or {\"points\": ..., \"width\": W} (repeatable)\n"
    "  --mask MASK.png         a mask of the photo's size; non-zero is marked (repeatable)\n"
    "  --prompt P.json         a prompt file (repeatable: one alpha per file, needs the pair)\n"
    "  --state auto|interactive  force the mode (default: interactive when a prompt marks a pixel)\n"
    "  --backend NAME          inference backend (default openvino)\n"
    "  --threads N             inference threads (default: the backend's)\n"
    "  --inference-precision P OpenVINO: f32 (default), bf16, f16\n"
    "  --precision NAME        which pair in an export folder (default float32)\n"
    "  --max-memory-mb MB      memory budget (default: 60% of the memory available + what the process holds)\n"
    "  --scale-to N            a photo too large for the budget runs scaled, its long side at most N\n"
    "                          (default 1568), and its alpha comes back at the photo's size\n"
    "  --max-side N            every photo's long side at most N (default: only the budget scales)\n"
    "  --upsampling M          guided (default: from the full-size photo), bilinear or nearest\n"
    "                          (the size policy of smat-deploy matte; the pair runs photos at their own size)\n"
    "  --json                  print a JSON summary on stdout\n"
    "  --version               print the library's version\n"
    "  -h, --help              this text\n";

struct Usage {
    std::string message;
};

std::vector<double> numbers(const std::string& text, std::size_t count, const char* what) {
    std::vector<double> values;
    std::size_t start = 0;
    while (true) {
        const std::size_t comma = text.find(',', start);
        const std::string part = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        char* end = nullptr;
        const double v = std::strtod(part.c_str(), &end);
        if (part.empty() || !end || *end != '\0' || !std::isfinite(v)) { values.clear(); break; }
        values.push_back(v);
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    if (values.size() != count)
        throw Usage{std::string(what) + " must be " + std::to_string(count) + " comma-separated numbers, got '" + text + "'"};
    return values;
}

bool is_dir(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string stem(const std::string& path) {
    const auto slash = path.find_last_of('/');
    std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
    const auto dot = name.find_last_of('.');
    return dot == std::string::npos ? name : name.substr(0, dot);
}

std::string escape(const std::string& text) {
    std::string out;
    for (char c : text) {
        if (c == '"' || c == '\\') out += '\\';
        if (static_cast<unsigned char>(c) < 0x20) { char b[8]; std::snprintf(b, sizeof b, "\\u%04x", c); out += b; continue; }
        out += c;
    }
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    std::string photo, engine, output, backend = "openvino", inference_precision = "f32", precision = "float32";
    std::vector<std::string> points, boxes, scribbles, masks, prompt_files;
    int radius = 20, threads = 0, scale_to = 0, max_side = 0;
    std::string upsampling = "guided";
    double max_memory_mb = 0;
    bool json = false;
    smat::State state = smat::State::Derived;
    try {
        for (int i = 1; i < argc; ++i) {
            const std::string arg = argv[i];
            auto value = [&]() -> std::string {
                if (i + 1 >= argc) throw Usage{"option " + arg + " needs a value"};
                return argv[++i];
            };
            if (arg == "-h" || arg == "--help") { std::fputs(kUsage, stdout); return 0; }
            if (arg == "--version") { std::printf("smat_matte %s\n", smat::version()); return 0; }
            if (arg == "-e" || arg == "--engine") engine = value();
            else if (arg == "-o" || arg == "--output") output = value();
            else if (arg == "--point") points.push_back(value());
            else if (arg == "--point-radius") {
                const std::string v = value();
                char* end = nullptr;
                const long r = std::strtol(v.c_str(), &end, 10);
                if (v.empty() || *end != '\0' || r < 0 || r > 100000) throw Usage{"--point-radius must be a whole number >= 0, got '" + v + "'"};
                radius = static_cast<int>(r);
            } else if (arg == "--box") boxes.push_back(value());
            else if (arg == "--scribble") scribbles.push_back(value());
            else if (arg == "--mask") masks.push_back(value());
            else if (arg == "--prompt") prompt_files.push_back(value());
            else if (arg == "--state") {
                const std::string v = value();
                if (v == "auto") state = smat::State::Automatic;
                else if (v == "interactive") state = smat::State::Interactive;
                else throw Usage{"--state must be auto or interactive, got '" + v + "'"};
            } else if (arg == "--backend") backend = value();
            else if (arg == "--threads") {
                const std::string v = value();
                char* end = nullptr;
                const long t = std::strtol(v.c_str(), &end, 10);
                if (v.empty() || *end != '\0' || t < 1 || t > 1024) throw Usage{"--threads must be a whole number >= 1, got '" + v + "'"};
                threads = static_cast<int>(t);
            } else if (arg == "--max-memory-mb") {
                const std::string v = value();
                char* end = nullptr;
                const double mb = std::strtod(v.c_str(), &end);
                if (v.empty() || *end != '\0' || !(mb > 0) || !std::isfinite(mb)) throw Usage{"--max-memory-mb must be a number above 0, got '" + v + "'"};
                max_memory_mb = mb;
            } else if (arg == "--scale-to" || arg == "--max-side") {
                const std::string v = value();
                char* end = nullptr;
                const long side = std::strtol(v.c_str(), &end, 10);
                if (v.empty() || *end != '\0' || side < 14 || side > 1000000) throw Usage{arg + " must be a whole number >= 14, got '" + v + "'"};
                (arg == "--scale-to" ? scale_to : max_side) = static_cast<int>(side);
            } else if (arg == "--upsampling") {
                upsampling = value();
                if (upsampling != "guided" && upsampling != "bilinear" && upsampling != "nearest")
                    throw Usage{"--upsampling must be guided, bilinear or nearest, got '" + upsampling + "'"};
            } else if (arg == "--inference-precision") inference_precision = value();
            else if (arg == "--precision") precision = value();
            else if (arg == "--json") json = true;
            else if (!arg.empty() && arg[0] == '-') throw Usage{"unknown option " + arg + " (see smat_matte --help)"};
            else if (photo.empty()) photo = arg;
            else throw Usage{"one photo only, got '" + photo + "' and '" + arg + "'"};
        }
        if (photo.empty()) throw Usage{"give the photo to matte (see smat_matte --help)"};
        if (engine.empty()) throw Usage{"give the model with --engine (smat.onnx, or an export folder for the pair)"};
        if (output.empty()) throw Usage{"give the alpha's path with -o"};
        const bool several = prompt_files.size() > 1;
        if (several && !(points.empty() && boxes.empty() && scribbles.empty() && masks.empty()))
            throw Usage{"several --prompt files each give one alpha: put clicks, boxes and masks in the files"};
        if (several && !is_dir(output)) throw Usage{"with several --prompt files, -o must be an existing folder: " + output};
        if (!several && is_dir(output)) throw Usage{"-o " + output + " is a folder: give the alpha's file name"};

        const auto started = std::chrono::steady_clock::now();
        const smat::Image image = smat::read_image(photo);
        std::vector<smat::Prompts> sets;
        std::vector<std::string> outputs;
        if (several) {
            for (const auto& file : prompt_files) {
                for (const auto& other : outputs)
                    if (other == output + "/" + stem(file) + ".png")
                        throw Usage{"prompt files must have different names (each gives OUT/<stem>.png): " + stem(file)};
                sets.push_back(smat::load_prompt_file(file));
                outputs.push_back(output + "/" + stem(file) + ".png");
            }
        } else {
            smat::Prompts prompts;
            if (!prompt_files.empty()) prompts = smat::load_prompt_file(prompt_files[0]);
            for (const auto& p : points) {
                const auto v = numbers(p, 2, "--point");
                prompts.push_back(smat::Point{v[0], v[1], radius});
            }
            for (const auto& b : boxes) {
                const auto v = numbers(b, 4, "--box");
                prompts.push_back(smat::Box{v[0], v[1], v[2], v[3]});
            }
            for (const auto& s : scribbles) prompts.push_back(smat::load_scribble_file(s));
            for (const auto& m : masks) {
                smat::MaskPrompt mask;
                mask.path = m;
                prompts.push_back(mask);
            }
            sets.push_back(prompts);
            outputs.push_back(output);
        }
        smat::Options options;
        options.backend = backend;
        options.threads = threads;
        options.inference_precision = inference_precision;
        options.precision = precision;
        options.max_memory_mb = max_memory_mb;
        options.size_policy = true;  // as smat-deploy matte: a photo too large for the budget runs scaled
        options.scale_to = scale_to;
        options.max_side = max_side;
        options.upsampling = upsampling;
        std::vector<smat::Alpha> alphas;
        std::string model;
        const bool pair = is_dir(engine) || several;
        if (pair) {
            const auto predictor = smat::Predictor::open(engine, options);
            model = predictor.encoder_info().path;
            const auto embedding = predictor.embed(image.view());
            for (const auto& prompts : sets) alphas.push_back(predictor.predict(embedding, prompts, state));
        } else {
            const auto whole = smat::Engine::open(engine, options);
            model = whole.info().path;
            alphas.push_back(whole.matte(image.view(), sets[0], state));
        }
        for (std::size_t i = 0; i < alphas.size(); ++i) smat::write_alpha_png(outputs[i], alphas[i]);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        if (json) {
            std::printf("{\"photo\": \"%s\", \"width\": %d, \"height\": %d, \"engine\": \"%s\", \"backend\": \"%s\", "
                        "\"pair\": %s, \"seconds\": %.4f, \"outputs\": [",
                        escape(photo).c_str(), image.width, image.height, escape(model).c_str(), backend.c_str(),
                        pair ? "true" : "false", seconds);
            for (std::size_t i = 0; i < outputs.size(); ++i) std::printf("%s\"%s\"", i ? ", " : "", escape(outputs[i]).c_str());
            std::printf("]}\n");
        } else {
            for (const auto& out : outputs)
                std::printf("wrote %s (%dx%d) in %.2f s with %s on %s\n", out.c_str(), image.width, image.height, seconds,
                            model.c_str(), backend.c_str());
        }
        return 0;
    } catch (const Usage& usage) {
        std::fprintf(stderr, "error: %s\n", usage.message.c_str());
        return 2;
    } catch (const smat::Error& err) {
        std::fprintf(stderr, "error: %s\n", err.what());
        return err.status() == smat::Status::Internal ? 1 : 2;
    } catch (const std::exception& err) {
        std::fprintf(stderr, "error: unexpected: %s\n", err.what());
        return 1;
    }
}
