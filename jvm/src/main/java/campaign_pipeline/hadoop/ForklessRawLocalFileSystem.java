package campaign_pipeline.hadoop;

import java.io.IOException;
import java.nio.file.Files;
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
  static Set<java.nio.file.attribute.PosixFilePermission> posix(int mode) {
    java.nio.file.attribute.PosixFilePermission[] bits = {
      java.nio.file.attribute.PosixFilePermission.OTHERS_EXECUTE,
      java.nio.file.attribute.PosixFilePermission.OTHERS_WRITE,
      java.nio.file.attribute.PosixFilePermission.OTHERS_READ,
      java.nio.file.attribute.PosixFilePermission.GROUP_EXECUTE,
      java.nio.file.attribute.PosixFilePermission.GROUP_WRITE,
      java.nio.file.attribute.PosixFilePermission.GROUP_READ,
      java.nio.file.attribute.PosixFilePermission.OWNER_EXECUTE,
      java.nio.file.attribute.PosixFilePermission.OWNER_WRITE,
      java.nio.file.attribute.PosixFilePermission.OWNER_READ,
    };
    Set<java.nio.file.attribute.PosixFilePermission> out =
        EnumSet.noneOf(java.nio.file.attribute.PosixFilePermission.class);
    for (int i = 0; i < bits.length; i++) {
      if ((mode & (1 << i)) != 0) {
        out.add(bits[i]);
      }
    }
    return out;
  }
}
