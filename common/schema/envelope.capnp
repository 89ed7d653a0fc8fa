@0xc1a3f4e2b7d80001;
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("stagefarm::schema");
# The first frame of every stagefarm message. See common/include/stagefarm/common/message.h.

struct Envelope {
  version @0 :UInt32;
  requestId @1 :UInt64;
  method @2 :UInt16;        # stagefarm::Method
  statusCode @3 :UInt16;    # stagefarm::StatusCode; 0 = OK
  statusMessage @4 :Text;
}
