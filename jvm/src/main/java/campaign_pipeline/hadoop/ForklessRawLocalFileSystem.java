package campaign_pipeline.hadoop;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.attribute.PosixFilePermission;
import java.util.EnumSet;
import java.util.Set;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.RawLocalFileSystem;
import org.apache.hadoop.fs.permission.FsPermission;
import org.apache.hadoop.io.nativeio.NativeIO;

/**
 * Hadoop's local file system without a process per file operation.
 *
 * <p>Without Hadoop's native library (pyspark ships none), {@link RawLocalFileSystem} runs
 * {@code chmod} for every file and folder it creates and {@code readlink} for every rename's
 * source and target: a Delta commit forks several processes, a tiny stage about a thousand (about
 * 5 ms each). This subclass sets permissions with java.nio and looks for a symbolic link with
 * java.nio first; a real symbolic link, and every case where the native library is loaded, still
 * takes Hadoop's own path. Used in local mode only (see {@code session.py}).
 */
public class ForklessRawLocalFileSystem extends RawLocalFileSystem {

  @Override
  public void setPermission(Path p, FsPermission permission) throws IOException {
    if (NativeIO.isAvailable()) {
      super.setPermission(p, permission);
      return;
    }
    Files.setPosixFilePermissions(pathToFile(p).toPath(), posix(permission.toShort()));
  }

  @Override
  public FileStatus getFileLinkStatus(Path f) throws IOException {
    if (NativeIO.isAvailable() || Files.isSymbolicLink(pathToFile(f).toPath())) {
      return super.getFileLinkStatus(f);
    }
    // Not a link: what Hadoop returns once `readlink` prints nothing.
    return getFileStatus(f);
  }

  /** The rwx bits of a Unix mode (setuid, setgid and sticky are not set by Hadoop's writers). */
  static Set<PosixFilePermission> posix(int mode) {
    Set<PosixFilePermission> out = EnumSet.noneOf(PosixFilePermission.class);
    // The enum runs OWNER_READ (0400) down to OTHERS_EXECUTE (0001), one bit per constant.
    for (PosixFilePermission bit : PosixFilePermission.values()) {
      if ((mode & (0400 >> bit.ordinal())) != 0) {
        out.add(bit);
      }
    }
    return out;
  }
}
