//! gRPC framing and protobuf coding of the hot messages: a PutRequest in
//! (frame decode + prost decode) and a 100-key RangeResponse out (prost
//! encode + frame). `cargo bench -p ferrokv-wire`; under `cargo test
//! --benches` each case runs once.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ferrokv_wire::grpc::{decode, encode_frame, FrameDecoder};
use ferrokv_wire::pb::etcdserverpb::{PutRequest, RangeResponse, ResponseHeader};
use ferrokv_wire::pb::mvccpb::KeyValue;

const MESSAGE_BYTES_MAX: usize = 2 << 20;

fn put_request() -> PutRequest {
    PutRequest {
        key: Bytes::from(format!("/bench/{:025}", 42)),
        value: Bytes::from(vec![b'v'; 256]),
        ..Default::default()
    }
}

fn range_response(kvs: usize) -> RangeResponse {
    RangeResponse {
        header: Some(ResponseHeader {
            cluster_id: 1,
            member_id: 2,
            revision: 1_000_000,
            raft_term: 3,
        }),
        kvs: (0..kvs)
            .map(|i| KeyValue {
                key: Bytes::from(format!("/bench/{i:025}")),
                create_revision: 10 + i as i64,
                mod_revision: 1000 + i as i64,
                version: 3,
                value: Bytes::from(vec![b'v'; 256]),
                lease: 0,
            })
            .collect(),
        more: true,
        count: 10_000,
    }
}

fn put_in(c: &mut Criterion) {
    let frame = encode_frame(&put_request());
    let mut group = c.benchmark_group("wire/put_request");
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function("encode_frame", |b| {
        let req = put_request();
        b.iter(|| encode_frame(&req));
    });
    group.bench_function("deframe_decode", |b| {
        b.iter(|| {
            let mut d = FrameDecoder::new(MESSAGE_BYTES_MAX);
            d.push(&frame);
            let msg = d.next_message().expect("frame").expect("whole frame");
            decode::<PutRequest>(msg).expect("decode")
        });
    });
    group.finish();
}

fn range_out(c: &mut Criterion) {
    let resp = range_response(100);
    let frame = encode_frame(&resp);
    let mut group = c.benchmark_group("wire/range_response_100");
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function("encode_frame", |b| b.iter(|| encode_frame(&resp)));
    group.bench_function("deframe_decode", |b| {
        b.iter(|| {
            let mut d = FrameDecoder::new(MESSAGE_BYTES_MAX);
            d.push(&frame);
            let msg = d.next_message().expect("frame").expect("whole frame");
            decode::<RangeResponse>(msg).expect("decode")
        });
    });
    group.finish();
}

criterion_group!(benches, put_in, range_out);
criterion_main!(benches);
