// SPDX-License-Identifier: Apache-2.0
//
// edgegw connection steering: an sk_reuseport program that picks, for every new TCP
// connection (and for every request migrated off a closing listener), which worker's
// listener in the SO_REUSEPORT group gets it.
//
// Maps (filled by gateway/src/steering/):
//   edgegw_socks    REUSEPORT_SOCKARRAY  slot = worker id -> that worker's listener
//   edgegw_config   ARRAY[1]             policy, worker count, the list of live slots
//   edgegw_loads    ARRAY[slot]          open connections per worker (published by userspace)
//   edgegw_counters PERCPU_ARRAY         per worker: connections steered; then rerouted,
//                                        kernel-fallback and migrated decisions
//
// Decisions: the policy picks a slot; if that slot holds no socket (a worker taken out,
// or a racing update) the program probes the next few live slots; when none is left it
// returns SK_PASS without selecting, so the kernel's own reuseport hash serves the
// connection. It never drops (SK_DROP) a connection.
//
// Self-contained on purpose (no kernel or libbpf headers): the UAPI pieces used are
// declared below, so the compiled object depends only on this file and the compiler
// flags, and a fresh compile can be compared byte for byte with the committed object.
// No GPL-only helper is used. Build (what gateway/build.rs runs, from this directory):
//   clang -target bpfel -O2 -fno-ident -Wall -Werror -c edgegw_steer.c -o edgegw_steer.o

typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))

// enum bpf_map_type (include/uapi/linux/bpf.h)
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_PERCPU_ARRAY 6
#define BPF_MAP_TYPE_REUSEPORT_SOCKARRAY 20

// enum sk_action
#define SK_DROP 0
#define SK_PASS 1

// Helper ids (enum bpf_func_id).
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static __u32 (*bpf_get_prandom_u32)(void) = (void *)7;
static __u32 (*bpf_get_smp_processor_id)(void) = (void *)8;
static long (*bpf_sk_select_reuseport)(void *ctx, void *map, void *key, __u64 flags) = (void *)82;

// struct sk_reuseport_md (UAPI, stable layout). Pointers are 64-bit slots.
struct sk_reuseport_md {
    union { void *data; __u64 :64; } __attribute__((aligned(8)));
    union { void *data_end; __u64 :64; } __attribute__((aligned(8)));
    __u32 len;
    __u32 eth_protocol;
    __u32 ip_protocol;
    __u32 bind_inany;
    __u32 hash;
    union { void *sk; __u64 :64; } __attribute__((aligned(8)));
    union { void *migrating_sk; __u64 :64; } __attribute__((aligned(8)));
};

// Legacy map definitions (the "maps" section), read by aya.
struct bpf_map_def {
    __u32 type;
    __u32 key_size;
    __u32 value_size;
    __u32 max_entries;
    __u32 map_flags;
};

// Must match gateway/src/steering/mod.rs.
#define MAX_SLOTS 1024 // config::MAX_WORKERS; a power of two (index masking below)
#define MAX_PROBES 4
#define POLICY_HASH 0
#define POLICY_CPU 1
#define POLICY_LEAST_LOADED 2
#define COUNTER_REROUTED (MAX_SLOTS + 0)
#define COUNTER_FALLBACK (MAX_SLOTS + 1)
#define COUNTER_MIGRATED (MAX_SLOTS + 2)
#define NR_COUNTERS (MAX_SLOTS + 4)

struct steer_config {
    __u32 policy;
    __u32 nr_workers; // slots 0..nr_workers-1 may hold a listener
    __u32 nr_live;    // live[0..nr_live-1]: slots userspace has filled
    __u32 reserved;
    __u32 live[MAX_SLOTS];
};

SEC("maps") struct bpf_map_def edgegw_socks = {
    .type = BPF_MAP_TYPE_REUSEPORT_SOCKARRAY,
    .key_size = sizeof(__u32),
    .value_size = sizeof(__u32),
    .max_entries = MAX_SLOTS,
};

SEC("maps") struct bpf_map_def edgegw_config = {
    .type = BPF_MAP_TYPE_ARRAY,
    .key_size = sizeof(__u32),
    .value_size = sizeof(struct steer_config),
    .max_entries = 1,
};

SEC("maps") struct bpf_map_def edgegw_loads = {
    .type = BPF_MAP_TYPE_ARRAY,
    .key_size = sizeof(__u32),
    .value_size = sizeof(__u32),
    .max_entries = MAX_SLOTS,
};

SEC("maps") struct bpf_map_def edgegw_counters = {
    .type = BPF_MAP_TYPE_PERCPU_ARRAY,
    .key_size = sizeof(__u32),
    .value_size = sizeof(__u64),
    .max_entries = NR_COUNTERS,
};

static __attribute__((always_inline)) void count(__u32 index)
{
    __u64 *value = bpf_map_lookup_elem(&edgegw_counters, &index);
    if (value)
        *value += 1; // per-CPU slot: no other CPU writes it
}

// cfg->live[i], with a bounds mask the verifier can see. The empty asm hides i's range from
// the compiler, which would otherwise drop the mask (it knows i < nr_live <= MAX_SLOTS; the
// verifier does not follow that through the modulo).
static __attribute__((always_inline)) __u32 live_at(const struct steer_config *cfg, __u32 i)
{
    asm volatile("" : "+r"(i));
    return cfg->live[i & (MAX_SLOTS - 1)];
}

static __attribute__((always_inline)) __u32 load_of(__u32 slot)
{
    __u32 *value = bpf_map_lookup_elem(&edgegw_loads, &slot);
    return value ? *value : 0;
}

// Hands the connection to the listener in `slot`; 0 on success, <0 when the slot is empty.
static __attribute__((always_inline)) long select_slot(struct sk_reuseport_md *md, __u32 slot)
{
    return bpf_sk_select_reuseport(md, &edgegw_socks, &slot, 0);
}

static __attribute__((always_inline)) int selected(struct sk_reuseport_md *md, __u32 slot,
                                                   int rerouted)
{
    count(slot & (MAX_SLOTS - 1));
    if (rerouted)
        count(COUNTER_REROUTED);
    if (md->migrating_sk)
        count(COUNTER_MIGRATED);
    return SK_PASS;
}

SEC("sk_reuseport/migrate")
int edgegw_select(struct sk_reuseport_md *md)
{
    __u32 zero = 0;
    struct steer_config *cfg = bpf_map_lookup_elem(&edgegw_config, &zero);
    if (!cfg) {
        count(COUNTER_FALLBACK);
        return SK_PASS;
    }
    __u32 nr_live = cfg->nr_live;
    __u32 nr_workers = cfg->nr_workers;
    if (nr_live == 0 || nr_live > MAX_SLOTS || nr_workers == 0 || nr_workers > MAX_SLOTS) {
        count(COUNTER_FALLBACK);
        return SK_PASS;
    }

    // Position in the live list: the 4-tuple hash spreads over live workers only.
    __u32 pos = md->hash % nr_live;
    __u32 slot;
    switch (cfg->policy) {
    case POLICY_CPU:
        // Worker w is pinned to CPU w % cpus: the worker of the CPU handling the SYN.
        slot = bpf_get_smp_processor_id() % nr_workers;
        break;
    case POLICY_LEAST_LOADED: {
        // Power of two choices: the hash's pick and a random other one; the less loaded wins.
        __u32 a = live_at(cfg, pos);
        slot = a;
        if (nr_live > 1) {
            __u32 other = bpf_get_prandom_u32() % nr_live;
            if (other == pos)
                other = (pos + 1) % nr_live;
            __u32 b = live_at(cfg, other);
            if (load_of(b) < load_of(a))
                slot = b;
        }
        break;
    }
    default:
        slot = live_at(cfg, pos);
        break;
    }
    if (select_slot(md, slot) == 0)
        return selected(md, slot, 0);

    // The chosen slot is empty: probe the next live slots (a tiny bounded loop).
    for (__u32 i = 0; i < MAX_PROBES; i++) {
        if (i >= nr_live)
            break;
        __u32 next = live_at(cfg, (pos + 1 + i) % nr_live);
        if (next == slot)
            continue;
        if (select_slot(md, next) == 0)
            return selected(md, next, 1);
    }
    // Nothing left: the kernel's own reuseport hash serves the connection.
    count(COUNTER_FALLBACK);
    return SK_PASS;
}

char _license[] SEC("license") = "Apache-2.0";
