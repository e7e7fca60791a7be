// Streams beats through one FINN RTL layer, cycle by cycle: targets/finn/testbench.cpp, its @NAME@ placeholders
// filled in for the layer's top by targets/finn/verilator.py (the ports' names and widths, the inputs held at 0).
// usage: tb IN_FILE OUT_FILE IN_BEATS OUT_BEATS IDLE_LIMIT STALL_PERMILLE SEED  (prints one JSON line)
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>
#include "verilated.h"
#include "Vdut.h"

// a port's bytes, little-endian: CData / SData / IData / QData, or VlWide's 32-bit words
template <typename T> static void put(T& port, const unsigned char* src) { std::memcpy(&port, src, sizeof(T)); }
template <std::size_t N> static void put(VlWide<N>& port, const unsigned char* src) {
    std::memcpy(port.data(), src, 4 * N);
}
template <typename T> static void get(const T& port, unsigned char* dst) { std::memcpy(dst, &port, sizeof(T)); }
template <std::size_t N> static void get(const VlWide<N>& port, unsigned char* dst) {
    std::memcpy(dst, port.data(), 4 * N);
}
template <typename T> static void zero(T& port) { port = 0; }
template <std::size_t N> static void zero(VlWide<N>& port) { std::memset(port.data(), 0, 4 * N); }

static uint64_t rng_state;
static bool stall(unsigned permille) {  // xorshift64: the same stalls for the same seed
    if (!permille) return false;
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return rng_state % 1000 < permille;
}

int main(int argc, char** argv) {
    if (argc != 8) { std::fprintf(stderr, "expected 7 arguments\n"); return 2; }
    const uint64_t n_in = std::strtoull(argv[3], nullptr, 10), n_out = std::strtoull(argv[4], nullptr, 10);
    const uint64_t idle_limit = std::strtoull(argv[5], nullptr, 10);
    const unsigned permille = (unsigned)std::strtoul(argv[6], nullptr, 10);
    rng_state = 2 * std::strtoull(argv[7], nullptr, 10) + 0x9E3779B97F4A7C15ULL;
    const std::size_t in_bytes = @IN_BYTES@, out_bytes = @OUT_BYTES@;
    std::vector<unsigned char> input(n_in * in_bytes), output(n_out * out_bytes);
    std::FILE* f = std::fopen(argv[1], "rb");
    if (!f || std::fread(input.data(), 1, input.size(), f) != input.size()) {
        std::fprintf(stderr, "cannot read input\n");
        return 2;
    }
    std::fclose(f);

    auto ctx = std::make_unique<VerilatedContext>();
    auto top = std::make_unique<Vdut>(ctx.get());
@ZERO_INPUTS@
    top->ap_rst_n = 0;
    for (int i = 0; i < @RESET_CYCLES@; ++i) { top->ap_clk = 0; top->eval(); top->ap_clk = 1; top->eval(); }
    top->ap_clk = 0; top->ap_rst_n = 1; top->eval();

    uint64_t cycle = 0, sent = 0, received = 0, idle = 0, first = 0, extra = 0;
    bool holding = false;
    const char* status = "ok";
    // one clock cycle per iteration: drive, settle, sample both handshakes, rising edge
    auto step = [&](bool collect) {
        if (!holding && sent < n_in && !stall(permille)) {
            put(top->@IN@_TDATA, &input[sent * in_bytes]);
            top->@IN@_TVALID = 1;
            holding = true;
        }
        top->@OUT@_TREADY = stall(permille) ? 0 : 1;
        top->eval();
        const bool in_fire = holding && top->@IN@_TREADY;
        const bool out_fire = top->@OUT@_TVALID && top->@OUT@_TREADY;
        if (out_fire && collect) {
            get(top->@OUT@_TDATA, &output[received * out_bytes]);
            if (!received) first = cycle + 1;
            ++received;
            idle = 0;
        } else if (out_fire) {
            ++extra;
        } else {
            ++idle;
        }
        top->ap_clk = 1; top->eval(); ++cycle;
        top->ap_clk = 0;
        if (in_fire) { ++sent; holding = false; top->@IN@_TVALID = 0; }
    };
    while (received < n_out) {
        step(true);
        if (ctx->gotFinish()) { status = "finish"; break; }
        if (idle > idle_limit) { status = "deadlock"; break; }
    }
    const uint64_t cycles = cycle;
    // drain: input the layer never took would shift every later sample; beats after the last expected one are
    // counted (a padder may already stream the next sample's border, which needs no input)
    for (uint64_t i = 0; !std::strcmp(status, "ok") && !ctx->gotFinish(); ++i) {
        if (i >= @DRAIN@ && (sent == n_in || i > idle_limit)) break;
        step(false);
    }
    top->final();
@MONITORS@
    if (!std::strcmp(status, "ok")) {
        f = std::fopen(argv[2], "wb");
        if (!f || std::fwrite(output.data(), 1, output.size(), f) != output.size()) {
            std::fprintf(stderr, "cannot write output\n");
            return 2;
        }
        std::fclose(f);
    }
    std::printf("{\"status\": \"%s\", \"cycles\": %" PRIu64 ", \"first_output_cycle\": %" PRIu64
                ", \"inputs_taken\": %" PRIu64 ", \"outputs\": %" PRIu64 ", \"extra_outputs\": %" PRIu64
                ", \"monitors\": {%s}}\n",
                status, cycles, first, sent, received, extra, monitors.c_str());
    return std::strcmp(status, "ok") ? 3 : 0;
}
