#pragma once

namespace tdpo::dist {

// Refuses a rendezvous that would run out of file descriptors: c10d's own threads open the
// peers' connections, and an EMFILE there is an exception nothing catches (std::terminate: with
// `ulimit -n 40`, 8 workers aborted). Measured on libtorch 1.13 with Gloo and 2-8 workers, rank 0
// (the store's host) holds about 3 descriptors per peer (the store connection, its callback
// connection, the Gloo pair) and every other rank about 1; kMargin more covers what training
// opens afterwards (checkpoint and metrics files). Throws ERR_TDPO_DISTRIBUTED naming the
// numbers; does nothing where the limit or the open count cannot be read (not Linux).
void check_descriptor_headroom(int rank, int world_size, bool hosts_store);

}  // namespace tdpo::dist
