// storage.ts: the warning before the Free plan's storage runs out, per object's share.
import t from 'tap';
import { nearLimit, OBJECT_LIMIT_BYTES, R2_LIMIT_BYTES } from '../../bridge-worker/storage.ts';

t.test('nearLimit: from 80 % of this object\'s share of each limit', async (t) => {
  t.same(nearLimit(0.79 * OBJECT_LIMIT_BYTES, 0.79 * R2_LIMIT_BYTES, 1), [], 'under 80 %: nothing');
  t.match(nearLimit(0.8 * OBJECT_LIMIT_BYTES, 0, 1), [{ store: 'object', percent: 80, shareBytes: OBJECT_LIMIT_BYTES }]);
  t.match(nearLimit(0, 9e9, 1), [{ store: 'r2', percent: 90 }]);
  t.match(nearLimit(0, 0.4 * R2_LIMIT_BYTES, 4), [{ store: 'r2', percent: 160, shareBytes: R2_LIMIT_BYTES / 4 }], 'four shards share the account\'s limit');
});
